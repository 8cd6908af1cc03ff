# not a number: ignored
