"""The torch modules of the neural models: dense and convolutional autoencoders.

Only ``nn.Module`` building blocks live here (no estimator logic), so that every neural
model (MMEDA, DCMF) shares them:

* :func:`mlp` -- a feed-forward stack ``Linear -> act -> ... -> Linear``;
* :class:`DenseAutoencoder` -- a matrix view's (or its transpose's) autoencoder;
* :class:`LinearAutoencoder` -- a linear encoder/decoder for samples of any shape;
* :class:`ConvAutoencoder` -- a tensor view's autoencoder for inputs ``(n, C, L)``,
  ``(n, C, H, W)`` or ``(n, C, D, H, W)``; every shape is derived from the input shape,
  so any spatial size works (not only the paper's), and the decoder returns exactly the
  input shape;
* :func:`conv_stack_shapes` -- the spatial shapes through the conv stack, with the
  "too small" check;
* :func:`build_module` / :func:`init_parameters` -- construct a module without touching
  torch's global random state and initialise it from a :class:`torch.Generator`
  (the same draws as torch's default initialisation), so that a seeded fit is
  bit-identical on the CPU and the same whatever device the module lives on.

The API (names, arguments, ``encode``/``decode``/``forward``) is stable: other models
import it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "LinearAutoencoder",
    "build_module",
    "conv_stack_shapes",
    "init_parameters",
    "mlp",
]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "identity": nn.Identity,
}

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


def _activation(name):
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose among {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


def mlp(sizes, activation="relu", output_activation=None):
    """A feed-forward network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Parameters
    ----------
    sizes : sequence of int
        Widths, input first; at least two entries.
    activation : str
        Activation after every hidden layer (a key of :data:`ACTIVATIONS`).
    output_activation : str or None
        Activation after the last layer (``None``: linear output).

    Returns
    -------
    torch.nn.Sequential
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least an input and an output width; got {sizes}.")
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        last = i == len(sizes) - 2
        if not last:
            layers.append(_activation(activation))
        elif output_activation is not None:
            layers.append(_activation(output_activation))
    return nn.Sequential(*layers)


class DenseAutoencoder(nn.Module):
    """A fully connected autoencoder ``n_features -> hidden -> n_components -> hidden^R``.

    Parameters
    ----------
    n_features : int
        Input width.
    hidden_layer_sizes : sequence of int
        Hidden widths of the encoder (the decoder mirrors them).
    n_components : int
        Code width.
    activation : str, default="relu"
        Hidden activation.
    code_activation : str or None, default=None
        Activation of the code (``None``: linear code).

    Attributes
    ----------
    encoder, decoder : torch.nn.Sequential

    Examples
    --------
    >>> import torch
    >>> from mmfactor.neural import DenseAutoencoder
    >>> ae = DenseAutoencoder(8, (6,), 2)
    >>> code, recon = ae(torch.zeros(5, 8))
    >>> tuple(code.shape), tuple(recon.shape)
    ((5, 2), (5, 8))
    """

    def __init__(self, n_features, hidden_layer_sizes, n_components, *, activation="relu",
                 code_activation=None):
        super().__init__()
        hidden = [int(h) for h in hidden_layer_sizes]
        self.n_features = int(n_features)
        self.n_components = int(n_components)
        self.encoder = mlp([n_features, *hidden, n_components], activation, code_activation)
        self.decoder = mlp([n_components, *hidden[::-1], n_features], activation, None)

    def encode(self, x):
        """Encode a batch.

        Parameters
        ----------
        x : torch.Tensor of shape (n, n_features)
            The batch.

        Returns
        -------
        code : torch.Tensor of shape (n, n_components)
            The result.
        """
        return self.encoder(x)

    def decode(self, code):
        """Decode a batch of codes.

        Parameters
        ----------
        code : torch.Tensor of shape (n, n_components)
            The batch.

        Returns
        -------
        reconstruction : torch.Tensor of shape (n, n_features)
            The result.
        """
        return self.decoder(code)

    def forward(self, x):
        """Encode and decode a batch.

        Parameters
        ----------
        x : torch.Tensor of shape (n, n_features)
            The batch.

        Returns
        -------
        code : torch.Tensor of shape (n, n_components)
            The codes.
        reconstruction : torch.Tensor of shape (n, n_features)
            The decoded codes.
        """
        code = self.encode(x)
        return code, self.decode(code)


def conv_stack_shapes(spatial_shape, n_layers, *, name="input"):
    """Spatial shapes before the stack and after each conv + 2x max-pool layer.

    A ``kernel_size=3, padding=1`` convolution keeps the size; each pooling halves it
    (rounding down). Every size must stay >= 1 after the last pooling, i.e. each input
    dimension needs at least ``2 ** n_layers`` entries.

    Raises
    ------
    ValueError
        When a spatial dimension is too small for ``n_layers`` poolings.
    """
    shape = tuple(int(s) for s in spatial_shape)
    need = 2**n_layers
    if any(s < need for s in shape):
        raise ValueError(
            f"View {name!r} has spatial shape {shape}, too small for a convolutional stack of "
            f"{n_layers} layer(s) with 2x pooling: every spatial dimension needs at least "
            f"{need} entries. Use fewer conv_channels or larger inputs."
        )
    shapes = [shape]
    for _ in range(n_layers):
        shape = tuple(s // 2 for s in shape)
        shapes.append(shape)
    return shapes


class ConvAutoencoder(nn.Module):
    """A convolutional autoencoder for ``(n, C, L)``, ``(n, C, H, W)`` or ``(n, C, D, H, W)``.

    Encoder: per entry of ``conv_channels`` a ``kernel_size=3, padding=1`` convolution,
    the activation and a 2x max-pooling (as in the paper: two conv layers with max
    pooling), then the flattened maps go through dense layers ``hidden_layer_sizes`` to
    the code. Decoder: the mirror image, with nearest-neighbour upsampling to the exact
    pre-pooling size of each stage (derived from the input shape, so odd sizes such as
    the 16 x 15 digits come back as 16 x 15) and a final linear convolution to ``C``
    channels.

    Parameters
    ----------
    input_shape : tuple of int
        ``(C, *spatial)`` of one sample, with 1 to 3 spatial dimensions.
    conv_channels : sequence of int
        Channels of each conv layer.
    hidden_layer_sizes : sequence of int
        Dense widths between the flattened maps and the code.
    n_components : int
        Code width.
    activation : str, default="relu"
        Hidden activation.
    code_activation : str or None, default=None
        Activation of the code.
    code_input : int, default=None
        Width of what the decoder takes (default ``n_components``); a model whose decoder
        reads another representation (MMEDA-I decodes the fused one) sets it.
    name : str, default="input"
        Used in error messages.

    Examples
    --------
    >>> import torch
    >>> from mmfactor.neural import ConvAutoencoder
    >>> ae = ConvAutoencoder((1, 16, 15), (4, 8), (16,), 3)
    >>> code, recon = ae(torch.zeros(2, 1, 16, 15))
    >>> tuple(code.shape), tuple(recon.shape)
    ((2, 3), (2, 1, 16, 15))
    """

    def __init__(self, input_shape, conv_channels, hidden_layer_sizes, n_components, *,
                 activation="relu", code_activation=None, code_input=None, name="input"):
        super().__init__()
        input_shape = tuple(int(s) for s in input_shape)
        spatial = input_shape[1:]
        if not 1 <= len(spatial) <= 3:
            raise ValueError(
                f"View {name!r}: a convolutional autoencoder takes samples of shape (C, L), "
                f"(C, H, W) or (C, D, H, W); got {input_shape}."
            )
        channels = [int(c) for c in conv_channels]
        if not channels:
            raise ValueError("conv_channels must name at least one layer.")
        d = len(spatial)
        self.input_shape = input_shape
        self.n_components = int(n_components)
        self.shapes = conv_stack_shapes(spatial, len(channels), name=name)
        conv, pool = _CONV[d], _POOL[d]
        layers, c_in = [], input_shape[0]
        for c in channels:
            layers += [conv(c_in, c, kernel_size=3, padding=1), _activation(activation),
                       pool(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self._flat_shape = (channels[-1], *self.shapes[-1])
        n_flat = math.prod(self._flat_shape)
        hidden = [int(h) for h in hidden_layer_sizes]
        # every dense layer of the head is followed by the activation; the code layer is not
        self.encoder_head = mlp([n_flat, *hidden], activation, activation) if hidden else None
        head_out = hidden[-1] if hidden else n_flat
        # the code layer, then back up
        self.code = nn.Sequential(nn.Linear(head_out, n_components),
                                  _activation(code_activation))
        dec_in = int(code_input) if code_input is not None else n_components
        self.decoder_head = mlp([dec_in, *hidden[::-1], n_flat], activation, activation)
        up = []
        rev = channels[::-1]
        for i, c in enumerate(rev):
            c_out = rev[i + 1] if i + 1 < len(rev) else channels[0]
            up += [nn.Upsample(size=self.shapes[len(rev) - 1 - i], mode="nearest"),
                   conv(c, c_out, kernel_size=3, padding=1), _activation(activation)]
        up.append(conv(channels[0], input_shape[0], kernel_size=3, padding=1))
        self.upsample = nn.Sequential(*up)

    def encode(self, x):
        """Encode a batch.

        Parameters
        ----------
        x : torch.Tensor of shape (n, C, ...)
            The batch.

        Returns
        -------
        code : torch.Tensor of shape (n, n_components)
            The result.
        """
        h = self.features(x).flatten(1)
        if self.encoder_head is not None:
            h = self.encoder_head(h)
        return self.code(h)

    def decode(self, code):
        """Decode a batch of codes.

        Parameters
        ----------
        code : torch.Tensor of shape (n, code_input)
            The batch.

        Returns
        -------
        reconstruction : torch.Tensor of shape (n, C, ...)
            The result.
        """
        h = self.decoder_head(code)
        return self.upsample(h.view(code.shape[0], *self._flat_shape))

    def forward(self, x):
        """Encode and decode a batch.

        Parameters
        ----------
        x : torch.Tensor of shape (n, C, ...)
            The batch.

        Returns
        -------
        code : torch.Tensor of shape (n, n_components)
            The codes.
        reconstruction : torch.Tensor of shape (n, C, ...)
            The decoded codes, the shape of the input.
        """
        code = self.encode(x)
        return code, self.decode(code)


def init_parameters(module, generator):
    """(Re)initialise every Linear/Conv layer of ``module`` from ``generator``.

    The same distributions as torch's defaults (Kaiming-uniform weights with
    ``a=sqrt(5)``, uniform biases in ``+-1/sqrt(fan_in)``), drawn on the CPU in float64
    from ``generator`` and copied to each parameter's device and dtype: the result does
    not depend on the device, and torch's global random state is never used.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
                w = torch.empty(m.weight.shape, dtype=torch.float64)
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
                m.weight.copy_(w)
                if m.bias is not None:
                    fan_in = m.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                    b = torch.empty(m.bias.shape, dtype=torch.float64)
                    nn.init.uniform_(b, -bound, bound, generator=generator)
                    m.bias.copy_(b)
    return module


def build_module(factory, generator, device="cpu", dtype=torch.float32):
    """Build ``factory()`` on the meta device, allocate it on ``device`` and initialise it.

    Construction on the meta device draws nothing from torch's global random state;
    :func:`init_parameters` then fills the parameters from ``generator``.
    """
    with torch.device("meta"):
        module = factory()
    module = module.to_empty(device=device).to(dtype)
    return init_parameters(module, generator)


class LinearAutoencoder(nn.Module):
    """A linear encoder and decoder for samples of any shape (flattened in between).

    ``encode(x) = flatten(x) W_e^T + b_e`` and ``decode(z) = (z W_d^T + b_d)`` reshaped to
    ``input_shape``: the small-data path of MMEDA, whose weights are set in closed form.

    Parameters
    ----------
    input_shape : tuple of int
        The shape of one sample (``(d,)`` for a matrix view, ``(C, ...)`` for a tensor).
    n_components : int
        Code width.
    code_input : int, default=None
        Width of what the decoder takes (default ``n_components``).

    Examples
    --------
    >>> import torch
    >>> from mmfactor.neural._modules import LinearAutoencoder
    >>> ae = LinearAutoencoder((1, 4, 3), 2)
    >>> code, recon = ae(torch.zeros(5, 1, 4, 3))
    >>> tuple(code.shape), tuple(recon.shape)
    ((5, 2), (5, 1, 4, 3))
    """

    def __init__(self, input_shape, n_components, *, code_input=None):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_components = int(n_components)
        width = math.prod(self.input_shape)
        self.encoder = nn.Linear(width, self.n_components)
        self.decoder = nn.Linear(int(code_input or n_components), width)

    def encode(self, x):
        """The codes of a batch ``x`` of shape ``(n, *input_shape)``."""
        return self.encoder(x.flatten(1))

    def decode(self, code):
        """The reconstruction, of shape ``(n, *input_shape)``, of a batch of codes."""
        return self.decoder(code).view(code.shape[0], *self.input_shape)

    def forward(self, x):
        """``(code, reconstruction)`` of a batch."""
        code = self.encode(x)
        return code, self.decode(code)
