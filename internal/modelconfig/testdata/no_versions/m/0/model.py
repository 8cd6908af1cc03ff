# version 0 is not a version
