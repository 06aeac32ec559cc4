def load_model(*args, **kwargs):
    raise RuntimeError("the Keras model is not available in this stand-in: use FER(use_tflite=True), the default")
