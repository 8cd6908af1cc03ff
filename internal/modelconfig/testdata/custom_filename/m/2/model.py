# model.py is not the model file here
