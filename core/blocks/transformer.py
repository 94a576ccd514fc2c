"""Transformer bottleneck: multi-head self-attention over the bottleneck's pixels as tokens.

The tokens are the bottleneck's pixels: the task's input divided by 2^depth. At depth 4 the
Mars task's 64x128 input leaves a 4x8 map: 32 tokens, cheap enough for full attention (a
512x512 input at depth 4 leaves 1,024 tokens: attention costs grow with their square). The
positional embeddings are learned for that token count, so a model is tied to its input size.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ablate.blocks.base import Block, DropPath, regularizer_config
from ablate.registry import BOTTLENECKS


@keras.saving.register_keras_serializable(package="ablate", name="TransformerEncoderLayer")
class TransformerEncoderLayer(keras.layers.Layer):
    """One pre-norm encoder layer: LN -> multi-head attention -> residual, LN -> MLP -> residual.

    Args:
        dim: token width.
        heads: attention heads (key size ``dim // heads``, at least 1).
        mlp_ratio: hidden width of the MLP as a multiple of ``dim``.
        dropout: dropout on attention weights and MLP activations.
        drop_path: stochastic-depth rate of both residual branches.
        kernel_regularizer: penalty on the attention and MLP kernels.

    Example:
        >>> TransformerEncoderLayer(dim=64, heads=4)(keras.ops.ones((2, 32, 64))).shape
        (2, 32, 64)
    """

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 drop_path: float = 0.0, kernel_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.heads, self.mlp_ratio = int(dim), int(heads), float(mlp_ratio)
        self.dropout, self.drop_path = float(dropout), float(drop_path)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        reg = self.kernel_regularizer
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.attn = keras.layers.MultiHeadAttention(
            self.heads, max(self.dim // self.heads, 1), dropout=self.dropout, kernel_regularizer=reg
        )
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.fc1 = keras.layers.Dense(max(int(round(self.dim * self.mlp_ratio)), 1), activation="gelu",
                                      kernel_regularizer=reg)
        self.fc2 = keras.layers.Dense(self.dim, kernel_regularizer=reg)
        self.drop = keras.layers.Dropout(self.dropout)
        self.drop_branch = DropPath(self.drop_path)

    def call(self, tokens: Any, training: Any = None) -> Any:
        h = self.norm1(tokens)
        tokens = tokens + self.drop_branch(self.attn(h, h, training=training), training=training)
        h = self.drop(self.fc1(self.norm2(tokens)), training=training)
        return tokens + self.drop_branch(self.drop(self.fc2(h), training=training), training=training)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "mlp_ratio": self.mlp_ratio,
                "dropout": self.dropout, "drop_path": self.drop_path,
                "kernel_regularizer": regularizer_config(self.kernel_regularizer)}


@BOTTLENECKS.register("transformer")
class TransformerBottleneck(Block):
    """Self-attention over the bottleneck tokens: 1x1 projection, learned positions, encoder layers.

    The map (B, H, W, C) is projected to ``filters`` channels, flattened to H*W tokens, given
    learned positional embeddings, passed through ``layers`` pre-norm encoder layers and a final
    layer norm, and reshaped back to (B, H, W, filters).

    Args:
        filters: token width (supplied by the model builder).
        heads: attention heads.
        layers: encoder layers.
        mlp_ratio: MLP hidden width as a multiple of ``filters``.
        dropout: dropout on attention weights and MLP activations.
        drop_path: stochastic-depth rate of the residual branches (set by the stochastic_depth
            regularizer unless given here).

    Example:
        >>> BOTTLENECKS.build({"type": "transformer", "heads": 4, "layers": 2}, filters=64)
    """

    def __init__(self, filters: int, heads: int = 4, layers: int = 2, mlp_ratio: float = 2.0,
                 dropout: float = 0.0, drop_path: float = 0.0, kernel_regularizer: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(filters, kernel_regularizer, **kwargs)
        for arg, value in (("heads", heads), ("layers", layers)):
            if int(value) < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}.")
        if float(mlp_ratio) <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}.")
        for arg, value in (("dropout", dropout), ("drop_path", drop_path)):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{arg} must be in [0, 1), got {value!r}.")
        self.heads, self.layers, self.mlp_ratio = int(heads), int(layers), float(mlp_ratio)
        self.dropout, self.drop_path = float(dropout), float(drop_path)
        self.proj = keras.layers.Conv2D(self.filters, 1, kernel_regularizer=self.kernel_regularizer)
        self.blocks = [
            TransformerEncoderLayer(self.filters, self.heads, self.mlp_ratio, self.dropout, self.drop_path,
                                    self.kernel_regularizer)
            for _ in range(self.layers)
        ]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6)

    def build(self, input_shape: Any) -> None:
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(f"The transformer bottleneck needs a static map size, got {tuple(input_shape)}.")
        self.grid = (int(height), int(width))
        self.pos = self.add_weight(
            name="pos_embedding", shape=(height * width, self.filters),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )

    def call(self, x: Any, training: Any = None) -> Any:
        height, width = self.grid
        tokens = ops.reshape(self.proj(x), (-1, height * width, self.filters)) + self.pos
        for block in self.blocks:
            tokens = block(tokens, training=training)
        return ops.reshape(self.norm(tokens), (-1, height, width, self.filters))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "heads": self.heads, "layers": self.layers, "mlp_ratio": self.mlp_ratio,
                "dropout": self.dropout, "drop_path": self.drop_path}
