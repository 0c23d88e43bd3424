"""CAA-Net models (paper Sec. III): one composable design for every table cell.

Layout: the input is ``(batch, time, mel)`` float32, the authors' layout (the paper writes the
spectrogram as F x T); internally ``(batch, 1, time, mel)``, so the authors' kernels
``(C_out, C_in, k_time, k_mel)`` load without transposition (:mod:`caanet.compat`).

* :mod:`.blocks`: ``ConvBlock`` = conv [+ Eq. 1 conditioning] -> BatchNorm -> ReLU [-> 2x2 max pool];
* :mod:`.backbones`: four blocks as ``cnn_pool``, ``cnn_nopool`` or ``atrous`` (Sec. III-C);
* :mod:`.conditioning`: ``DeviceConditioning``, Eq. 1's ``V_i * E_i`` as a per-sample bias;
* :mod:`.heads`: global pooling heads ``flatten``, ``max``, ``avg``, ``roi``, ``att``, ``roi_att`` (Sec. III-D);
* :mod:`.device_cnn`: ``DeviceCNN`` (CNN-d, multi-task conditional training);
* :mod:`.caanet`: ``ModelConfig``, ``build_model``, ``CAANet``, ``ModelOutput``.
"""

from caanet.models.backbones import Backbone, feature_map_shape
from caanet.models.blocks import ConvBlock
from caanet.models.caanet import DEVICE_SOURCES, CAANet, ModelConfig, ModelOutput, build_model
from caanet.models.conditioning import DeviceConditioning, device_one_hot, expanded_one_hot_conv
from caanet.models.device_cnn import DeviceCNN
from caanet.models.heads import AttentionHead, LinearHead, attention_pooling, build_head

__all__ = [
    "DEVICE_SOURCES",
    "AttentionHead",
    "Backbone",
    "CAANet",
    "ConvBlock",
    "DeviceCNN",
    "DeviceConditioning",
    "LinearHead",
    "ModelConfig",
    "ModelOutput",
    "attention_pooling",
    "build_head",
    "build_model",
    "device_one_hot",
    "expanded_one_hot_conv",
    "feature_map_shape",
]
