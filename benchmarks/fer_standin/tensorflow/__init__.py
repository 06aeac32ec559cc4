"""Stand-in for the part of TensorFlow that `fer` uses: tf.lite.Interpreter (LiteRT's)."""
import types

from ai_edge_litert.interpreter import Interpreter

lite = types.SimpleNamespace(Interpreter=Interpreter)
