"""Parameter initialisation shared by layers that own a raw conv weight."""

import math
from typing import Optional

import torch
from torch import nn


def init_conv_parameters_(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    """Initialise like ``nn.Conv2d``: Kaiming-uniform (a = sqrt(5)) weight, uniform bias."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1.0 / math.sqrt(weight[0].numel())  # fan_in = C/groups * kh * kw
        nn.init.uniform_(bias, -bound, bound)
