"""autotune.torch on a GPU: torchvision's MobileNetV2 and a plain depthwise -> 1x1 Sequential run
their blocks on tuned kernels (BatchNorm folded) and match the original model."""
import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")


def _randomize_batchnorm(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)


def _worst(out, ref, rtol):
    ref = ref.double()
    return float(((out.double() - ref).abs() / (rtol * (ref.abs() + ref.abs().max()))).max())


@pytest.mark.parametrize("dtype, layout", [(torch.float16, torch.channels_last), (torch.float32, torch.contiguous_format)])
def test_mobilenet_v2_matches(tmp_path, dtype, layout):
    torchvision = pytest.importorskip("torchvision")
    import autotune.torch as at
    torch.backends.cudnn.allow_tf32 = False      # the fp32 reference must be fp32, as our kernels are
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2().eval()
    _randomize_batchnorm(net)
    net = net.cuda().to(dtype).to(memory_format=layout)
    with pytest.warns(UserWarning, match="not tuned"):
        fast = at.optimize(net, db=tmp_path / "none.db")
        x = torch.rand(2, 3, 96, 80, device="cuda", dtype=dtype).contiguous(memory_format=layout)
        with torch.no_grad():
            out, ref = fast(x), net(x)
    assert fast.autotune_blocks == 17 and sum(isinstance(m, at.TunedBlock) for m in fast.modules()) == 17
    # the stem's and the last 1x1's BatchNorms are folded into their convs, ReLU6 joins them
    assert fast.autotune_folded == 2
    for i in (0, 18):
        assert isinstance(fast.features[i][0], at.ConvAct) and fast.features[i][0].act == "relu6"
        assert [type(m) for m in list(fast.features[i])[1:]] == [torch.nn.Identity, torch.nn.Identity]
    if dtype == torch.float16:       # the stem runs on the dense-conv kernel, the last 1x1 on cuDNN
        assert [k.family.name for k in fast.features[0][0]._kernels.values()] == ["conv_nhwc_tc"]
        assert list(fast.features[18][0]._kernels.values()) == [None]
    assert not hasattr(net, "autotune_blocks")            # the original is untouched
    assert isinstance(net.features[0][1], torch.nn.BatchNorm2d) and net.features[0][0].bias is None
    rtol = 8 * (2e-3 if dtype == torch.float16 else 1e-5)    # 8x a kernel's tolerance over ~50 layers
    assert _worst(out, ref, rtol) <= 1.0


def test_sequential_depthwise_pointwise_chain(tmp_path):
    import autotune.torch as at
    nn = torch.nn
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.Conv2d(24, 40, 1, bias=False), nn.BatchNorm2d(40), nn.ReLU6(),
                          nn.AdaptiveAvgPool2d(1)).eval()
    _randomize_batchnorm(model)
    model = model.cuda().half().to(memory_format=torch.channels_last)
    with pytest.warns(UserWarning):
        fast = at.optimize(model, db=tmp_path / "none.db")
        x = torch.rand(3, 3, 29, 31, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            out, ref = fast(x), model(x)
    assert fast.autotune_blocks == 1 and isinstance(fast[2], at.TunedBlock)
    assert fast[2].fields["op"] == "dwpw" and fast[2].fields["act"] == "relu" and fast[2].fields["act2"] == "relu6"
    assert _worst(out, ref, 2e-3) <= 1.0


def test_batchnorm_after_other_convs_is_folded():
    import autotune.torch as at
    nn = torch.nn
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                          nn.Conv2d(16, 8, 3, stride=2), nn.BatchNorm2d(8, affine=False),
                          nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))).eval()
    _randomize_batchnorm(model)
    model = model.cuda()
    fast = at.optimize(model)
    x = torch.rand(2, 3, 17, 19, device="cuda")
    with torch.no_grad():
        out, ref = fast(x), model(x)
    assert fast.autotune_blocks == 0 and fast.autotune_folded == 3
    assert [type(m).__name__ for m in fast[:5]] == ["ConvAct", "Identity", "Identity", "Conv2d", "Identity"]
    assert isinstance(fast[5][1], nn.Identity)
    assert _worst(out, ref, 1e-5) <= 1.0
    # float16 channels_last: the first ConvAct (3 -> 16, 3x3, no padding) runs on the dense-conv kernel
    half, fast_half = model.half().to(memory_format=torch.channels_last), fast.half().to(memory_format=torch.channels_last)
    xh = x.half().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out, ref = fast_half(xh), half(xh)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert [k.family.name for k in fast_half[0]._kernels.values()] == ["conv_nhwc_tc"]
    assert _worst(out, ref, 4e-3) <= 1.0


def test_training_model_is_refused():
    import autotune.torch as at
    with pytest.raises(ValueError, match="eval"):
        at.optimize(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)).train())
