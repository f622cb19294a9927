"""TensorRTRunner and the cuda-python layer (``runtime.cuda``) against API doubles.

``cuda_double`` stands in for ``cuda.bindings.runtime`` with "device memory" in host RAM, and
``trt_double``'s engines compute on it, so bindings, copies, shape changes, CUDA graph replay,
return-code checks and frees are exercised for real here; only the GPU itself is simulated.
These paths are unverified on hardware until the ``tensorrt``-marked tests run on a GPU.
``test_double_matches_the_real_cuda_python_api`` keeps the double honest: every CUDA function the
runtime calls exists in the installed cuda-python with the same parameters.
"""

from __future__ import annotations

import gc
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from cuda_double import make_fake_cudart
from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    InputTypeError,
    InvalidInputError,
)
from genmask_sdk.runtime import cuda as cuda_module
from genmask_sdk.runtime.base import TensorSpec, host_array
from genmask_sdk.runtime.cuda import CudaDevice, CudaError, DeviceArray, Stream
from genmask_sdk.families.genmask.pipeline import RunnerPipeline
from genmask_sdk.runtime.tensorrt_runner import EngineTensor, TensorRTRunner, check_feed
from trt_double import NUMPY, make_fake_tensorrt

PROFILE_X = ((1, 3), (2, 3), (4, 3))
AFFINE = np.arange(12, dtype=np.float32).reshape(3, 4) / 10.0
TENSORS = [("x", "INPUT", "FLOAT", (-1, 3), PROFILE_X), ("mask", "INPUT", "BOOL", (-1,), ((1,), (2,), (4,))),
           ("y", "OUTPUT", "FLOAT", (-1, 4), None), ("m", "OUTPUT", "FLOAT", (-1,), None)]


def affine(feeds):
    """What the fake engine computes: y = x @ A + 1, m = mask as float."""
    return {"y": feeds["x"] @ AFFINE + 1.0, "m": feeds["mask"].astype(np.float32)}


def feeds_of(batch, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, 3)).astype(np.float32), "mask": rng.random(batch) > 0.5}


@pytest.fixture
def plan(tmp_path) -> Path:
    path = tmp_path / "m.plan"
    path.write_bytes(b"FAKE-PLAN")
    return path


@pytest.fixture
def rt():
    return make_fake_cudart()


def runner_for(plan, rt, tensors=TENSORS, compute=affine, **kwargs) -> TensorRTRunner:
    trt = make_fake_tensorrt(engine_tensors=tensors, cudart=rt, compute=compute,
                             execute_ok=kwargs.pop("execute_ok", True))
    return TensorRTRunner(plan, trt=trt, cudart=rt, **kwargs)


# ---- load ---------------------------------------------------------------------------------------


def test_missing_plan_raises_not_found(tmp_path, rt):
    with pytest.raises(ArtifactNotFoundError, match="build_engines.py"):
        runner_for(tmp_path / "none.plan", rt).load()


def test_no_visible_gpu_raises_backend_unavailable(plan):
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU is visible to cuda-python"):
        runner_for(plan, make_fake_cudart(device_count=0)).load()
    with pytest.raises(BackendUnavailableError, match="cuda:3 was requested but cuda-python sees 1 GPU"):
        runner_for(plan, make_fake_cudart(), device="cuda:3").load()
    with pytest.raises(BackendUnavailableError, match="runs on a CUDA device, got device='cpu'"):
        runner_for(plan, make_fake_cudart(), device="cpu").load()


def test_missing_cuda_python_says_how_to_install(monkeypatch, plan):
    def no_cudart():
        raise BackendUnavailableError(f"cuda-python is not installed (test). {cuda_module.INSTALL_HINT}")

    monkeypatch.setattr(cuda_module, "import_cudart", no_cudart)
    trt = make_fake_tensorrt(engine_tensors=TENSORS)
    with pytest.raises(BackendUnavailableError, match=r"genmask-sdk\[gpu\]"):
        TensorRTRunner(plan, trt=trt).load()


def test_plan_from_other_tensorrt_raises_mismatch(tmp_path, rt):
    other = tmp_path / "other.plan"
    other.write_bytes(b"plan from another TensorRT")
    with pytest.raises(ArtifactMismatchError, match="version and GPU architecture.*Rebuild"):
        runner_for(other, rt).load()


def test_reads_engine_io_and_allows_host_code_only_on_request(plan, rt):
    tensors = [("x", "INPUT", "FLOAT", (-1, 3), PROFILE_X), ("mask", "INPUT", "BOOL", (-1,), ((1,), (2,), (4,))),
               ("y", "OUTPUT", "HALF", (-1, 4), None)]
    trt = make_fake_tensorrt(engine_tensors=tensors)
    with TensorRTRunner(plan, trt=trt, cudart=rt) as runner:
        assert runner.input_specs == [TensorSpec("x", "float32", (None, 3)), TensorSpec("mask", "bool", (None,))]
        assert runner.output_specs == [TensorSpec("y", "float16", (None, 4))]
    assert trt.record.host_code_allowed is False
    with TensorRTRunner(plan, trt=trt, cudart=rt, version_compatible=True):
        assert trt.record.host_code_allowed is True


def test_bf16_io_is_refused_with_the_fix(plan, rt):
    tensors = [("x", "INPUT", "BF16", (1, 3), None), ("y", "OUTPUT", "FLOAT", (1, 4), None)]
    with pytest.raises(BackendUnavailableError, match="dtype BF16.*keep_io_types"):
        runner_for(plan, rt, tensors=tensors).load()


# ---- infer ----------------------------------------------------------------------------------------


def test_numpy_feeds_run_and_outputs_are_device_arrays(plan, rt):
    with runner_for(plan, rt) as runner:
        feeds = feeds_of(3)
        out = runner.infer(feeds)
        assert set(out) == {"y", "m"} and all(isinstance(v, DeviceArray) for v in out.values())
        assert out["y"].shape == (3, 4) and out["y"].dtype == np.float32
        expected = affine(feeds)
        np.testing.assert_allclose(out["y"].to_numpy(), expected["y"], rtol=1e-6)
        np.testing.assert_array_equal(out["m"].to_numpy(), expected["m"])
        assert rt.record.copies() == ["HostToDevice", "HostToDevice", "DeviceToHost", "DeviceToHost"]


def test_same_shapes_reuse_bindings_new_shapes_rebind(plan, rt):
    trt = make_fake_tensorrt(engine_tensors=TENSORS, cudart=rt, compute=affine)
    with TensorRTRunner(plan, trt=trt, cudart=rt) as runner:
        first = runner.infer(feeds_of(2, seed=1))
        y_buffer = first["y"].ptr
        second = runner.infer(feeds_of(2, seed=2))
        assert second["y"].ptr == y_buffer  # outputs reused for the same shapes
        np.testing.assert_allclose(second["y"].to_numpy(), affine(feeds_of(2, seed=2))["y"], rtol=1e-6)
        shape_calls = [c for c in trt.record.context_calls if c[0] == "set_input_shape"]
        assert len(shape_calls) == 2  # x and mask once: the second call had the same shapes
        third = runner.infer(feeds_of(4, seed=3))
        assert third["y"].shape == (4, 4)
        np.testing.assert_allclose(third["y"].to_numpy(), affine(feeds_of(4, seed=3))["y"], rtol=1e-6)
        shape_calls = [c for c in trt.record.context_calls if c[0] == "set_input_shape"]
        assert shape_calls[-2:] == [("set_input_shape", "x", (4, 3)), ("set_input_shape", "mask", (4,))]
        executes = [c for c in trt.record.context_calls if c[0] == "execute_async_v3"]
        assert len(executes) == 3 and {c[1] for c in executes} == {int(runner.stream)}


def test_device_inputs_are_read_in_place(plan, rt):
    """A DeviceArray (a previous stage's output) or any __cuda_array_interface__ array is bound as it is."""
    with runner_for(plan, rt) as runner:
        feeds = feeds_of(2, seed=4)
        x = DeviceArray.from_numpy(runner.device, feeds["x"], runner.stream)
        before = rt.record.copies().count("HostToDevice")
        out = runner.infer({"x": x, "mask": feeds["mask"]})
        assert rt.record.copies().count("HostToDevice") == before + 1  # only the host mask
        np.testing.assert_allclose(out["y"].to_numpy(), affine(feeds)["y"], rtol=1e-6)

        class Foreign:  # what CuPy / Numba / torch CUDA tensors expose
            def __init__(self, array):
                self.__cuda_array_interface__ = {"shape": array.shape, "typestr": array.dtype.str,
                                                 "data": (array.ptr, False), "version": 2}

        out = runner.infer({"x": Foreign(x), "mask": feeds["mask"]})
        np.testing.assert_allclose(out["y"].to_numpy(), affine(feeds)["y"], rtol=1e-6)


def test_foreign_arrays_in_host_memory_or_strided_are_refused(plan, rt):
    host = np.zeros((2, 3), np.float32)

    class Foreign:
        def __init__(self, ptr, strides=None):
            self.__cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (ptr, False),
                                             "strides": strides, "version": 3}

    with runner_for(plan, rt) as runner:
        mask = np.ones(2, bool)
        with pytest.raises(InvalidInputError, match=r"Input tensor: x \| a Foreign in host memory was passed"):
            runner.infer({"x": Foreign(host.ctypes.data), "mask": mask})
        device = DeviceArray.empty(runner.device, (3, 2), np.float32, runner.stream)
        with pytest.raises(InvalidInputError, match=r"strides \(4, 8\) is not C-contiguous"):
            runner.infer({"x": Foreign(device.ptr, strides=(4, 8)), "mask": mask})


def test_device_array_on_another_gpu_is_refused(plan):
    rt = make_fake_cudart(device_count=2)
    with runner_for(plan, rt, device="cuda:1") as runner:
        other = CudaDevice(0, rt)
        x = DeviceArray.from_numpy(other, np.zeros((2, 3), np.float32), Stream(other))
        with pytest.raises(InvalidInputError, match="DeviceArray on cuda:0; expected cuda:1"):
            runner.infer({"x": x, "mask": np.ones(2, bool)})


X_SPEC = EngineTensor("x", True, "float32", (-1, 3), PROFILE_X)


@pytest.mark.parametrize(
    ("dtype", "shape", "match"),
    [
        ("float64", (2, 3), r"Input tensor: x \| Received unexpected dtype: float64.\nNote: Expected type: float32"),
        ("float32", (2, 4), r"Input tensor: x \| Received incompatible shape: \(2, 4\).\nNote: .* \('\?', 3\)"),
        ("float32", (8, 3), r"outside the engine's optimization profile.\n(?s:.*)max \(4, 3\)"),
    ],
)
def test_feed_checks(dtype, shape, match):
    with pytest.raises(InvalidInputError, match=match):
        check_feed("x", dtype, shape, X_SPEC)


def test_wrong_input_types_are_typed_errors(plan, rt):
    with runner_for(plan, rt) as runner:
        with pytest.raises(InputTypeError, match="Received list; TensorRTRunner takes numpy arrays"):
            runner.infer({"x": [[0.0, 0.0, 0.0]], "mask": np.ones(1, bool)})
        with pytest.raises(InvalidInputError, match="outside the engine's optimization profile"):
            runner.infer(feeds_of(5))


# ---- CUDA graphs ----------------------------------------------------------------------------------


def test_cuda_graph_is_captured_once_and_replayed_with_new_inputs(plan, rt):
    trt = make_fake_tensorrt(engine_tensors=TENSORS, cudart=rt, compute=affine)
    with TensorRTRunner(plan, trt=trt, cudart=rt, use_cuda_graph=True) as runner:
        for seed in range(3):
            out = runner.infer(feeds_of(2, seed=seed))
            np.testing.assert_allclose(out["y"].to_numpy(), affine(feeds_of(2, seed=seed))["y"], rtol=1e-6)
        names = rt.record.names()
        assert names.count("cudaStreamBeginCapture") == 1 and names.count("cudaGraphLaunch") == 2
        assert len([c for c in trt.record.context_calls if c[0] == "execute_async_v3"]) == 2  # warm-up + capture
        out = runner.infer(feeds_of(4, seed=9))  # new shapes: re-captured
        np.testing.assert_allclose(out["y"].to_numpy(), affine(feeds_of(4, seed=9))["y"], rtol=1e-6)
        assert rt.record.names().count("cudaStreamBeginCapture") == 2
        assert rt.record.graphs_live == 1  # the old graph was destroyed
    assert rt.record.graphs_live == 0


def test_failed_capture_leaves_the_stream_usable(plan):
    rt = make_fake_cudart(fail={"cudaGraphInstantiate": "cudaErrorStreamCaptureInvalidated"})
    with runner_for(plan, rt, use_cuda_graph=True) as runner:
        with pytest.raises(BackendUnavailableError, match="CUDA graph failed.*use_cuda_graph=False"):
            runner.infer(feeds_of(2))
        assert not rt.record.capturing  # capture ended
        runner.use_cuda_graph = False
        np.testing.assert_allclose(runner.infer(feeds_of(2))["y"].to_numpy(), affine(feeds_of(2))["y"], rtol=1e-6)


# ---- return codes and memory -----------------------------------------------------------------------


def test_every_cuda_failure_is_a_typed_error_naming_the_call(plan):
    rt = make_fake_cudart(fail={"cudaMalloc": "cudaErrorMemoryAllocation"})
    with runner_for(plan, rt) as runner:
        with pytest.raises(CudaError, match=r"CUDA cudaMalloc failed: cudaErrorMemoryAllocation \(fake CUDA error 2\)"):
            runner.infer(feeds_of(2))
    rt = make_fake_cudart(fail={"cudaMemcpyAsync": "cudaErrorInvalidValue"})
    with runner_for(plan, rt) as runner, pytest.raises(CudaError, match="cudaMemcpyAsync failed"):
        runner.infer(feeds_of(2))


def test_tensorrt_failures_are_typed_errors(plan, rt):
    with runner_for(plan, rt, execute_ok=False) as runner:
        with pytest.raises(BackendUnavailableError, match="execute_async_v3 failed.*CUDA_LAUNCH_BLOCKING"):
            runner.infer(feeds_of(2))


def test_close_frees_every_buffer_and_its_own_stream(plan, rt):
    with runner_for(plan, rt) as runner:
        runner.infer(feeds_of(2))
        runner.infer(feeds_of(3))
        stream = int(runner.stream)
    gc.collect()
    assert not rt.record.live, f"leaked {len(rt.record.live)} device allocations"
    assert stream not in rt.record.streams


def test_a_shared_stream_is_left_to_its_owner(plan, rt):
    device = CudaDevice(0, rt)
    shared = Stream(device)
    first, second = runner_for(plan, rt, stream=shared), runner_for(plan, rt, stream=shared)
    with first, second:
        out = first.infer(feeds_of(2))
        assert first.stream is shared and second.stream is shared
        second.infer({"x": out["y"].to_numpy()[:, :3].copy(), "mask": np.ones(2, bool)})
    assert int(shared) in rt.record.streams
    shared.destroy()
    assert int(shared) not in rt.record.streams


def test_device_array_round_trip_repeat_and_interface(rt):
    device = CudaDevice(0, rt)
    stream = Stream(device)
    row = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    array = DeviceArray.from_numpy(device, row, stream)
    np.testing.assert_array_equal(array.to_numpy(), row)
    np.testing.assert_array_equal(array.repeat_batch(3).to_numpy(), np.repeat(row, 3, axis=0))
    np.testing.assert_array_equal(array.clone().to_numpy(), row)
    interface = array.__cuda_array_interface__
    assert interface["shape"] == (1, 2, 3) and interface["typestr"] == "<f4" and interface["data"] == (array.ptr, False)
    with pytest.raises(InvalidInputError, match="cannot upload a float64"):
        array.upload(row.astype(np.float64))
    with pytest.raises(InvalidInputError, match="leading axis of 1"):
        array.repeat_batch(3).repeat_batch(2)


# ---- the pipeline on TensorRT runners (what Segmenter drives on a GPU) -----------------------------


def _stage_tensors(stage):
    return {
        "vae_encoder": [("pixels", "INPUT", "FLOAT", (-1, 3, 16, 16), ((1, 3, 16, 16),) * 2 + ((4, 3, 16, 16),)),
                        ("z_img", "OUTPUT", "FLOAT", (-1, 16, 2, 2), None)],
        "dit": [("z_img", "INPUT", "FLOAT", (-1, 16, 2, 2), ((1, 16, 2, 2),) * 2 + ((4, 16, 2, 2),)),
                ("context", "INPUT", "FLOAT", (-1, -1, 8), ((1, 1, 8), (1, 4, 8), (4, 8, 8))),
                ("context_mask", "INPUT", "BOOL", (-1, -1), ((1, 1), (1, 4), (4, 8))),
                ("x0", "OUTPUT", "FLOAT", (-1, 16, 2, 2), None)],
        "mask_head": [("latent", "INPUT", "FLOAT", (-1, 16, 2, 2), ((1, 16, 2, 2),) * 2 + ((4, 16, 2, 2),)),
                      ("logits", "OUTPUT", "FLOAT", (-1, 1, 16, 16), None)],
    }[stage]


STAGES = {
    "vae_encoder": lambda f: {"z_img": np.tile(f["pixels"][:, :1, :2, :2], (1, 16, 1, 1)) * 2.0},
    "dit": lambda f: {"x0": f["z_img"] + (f["context"] * f["context_mask"][..., None]).sum(axis=(1, 2))[:, None, None, None]},
    "mask_head": lambda f: {"logits": np.repeat(np.repeat(f["latent"][:, :1], 8, axis=2), 8, axis=3)},
}


def test_pipeline_keeps_values_on_the_device_and_matches_numpy(tmp_path, rt):
    device = CudaDevice(0, rt)
    stream = Stream(device)
    runners = {}
    for stage in STAGES:
        path = tmp_path / f"{stage}.plan"
        path.write_bytes(b"FAKE-PLAN")
        runners[stage] = runner_for(path, rt, tensors=_stage_tensors(stage), compute=STAGES[stage], stream=stream).load()
    pipeline = RunnerPipeline("tensorrt", runners, "cuda:0", host_io=False, owned=[stream])
    pipeline.check_graphs(16, 8)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    context = rng.standard_normal((3, 5, 8)).astype(np.float32)
    mask = np.ones((3, 5), bool)
    mask[1, 3:] = False
    z_img = pipeline.encode(pixels)
    copies_before = rt.record.copies()
    x0 = pipeline.denoise(z_img, context, mask)  # z_img repeated 3x on the device
    logits = host_array(pipeline.decode(x0))
    new_copies = rt.record.copies()[len(copies_before):]
    assert new_copies.count("HostToDevice") == 2  # context and mask only: z_img and x0 never left the device
    assert new_copies.count("DeviceToHost") == 1  # the logits
    assert isinstance(z_img, DeviceArray) and isinstance(x0, DeviceArray)
    z_ref = STAGES["vae_encoder"]({"pixels": pixels})["z_img"]
    x_ref = STAGES["dit"]({"z_img": np.repeat(z_ref, 3, axis=0), "context": context, "context_mask": mask})["x0"]
    np.testing.assert_allclose(logits, STAGES["mask_head"]({"latent": x_ref})["logits"], rtol=1e-6)
    again = pipeline.encode(pixels)  # a stage's result is the caller's: the next call does not overwrite it
    assert again.ptr != z_img.ptr
    np.testing.assert_allclose(z_img.to_numpy(), z_ref)
    pipeline.close()
    del z_img, x0, again
    gc.collect()
    assert not rt.record.live and int(stream) not in rt.record.streams


def test_pipeline_refuses_non_float32_values_between_stages(tmp_path, rt):
    tensors = {s: _stage_tensors(s) for s in STAGES}
    tensors["vae_encoder"][1] = ("z_img", "OUTPUT", "HALF", (-1, 16, 2, 2), None)
    runners = {}
    for stage in STAGES:
        path = tmp_path / f"{stage}.plan"
        path.write_bytes(b"FAKE-PLAN")
        runners[stage] = runner_for(path, rt, tensors=tensors[stage]).load()
    pipeline = RunnerPipeline("tensorrt", runners, "cuda:0", host_io=False)
    with pytest.raises(ArtifactMismatchError, match="vae_encoder.z_img is float16.*float32"):
        pipeline.check_graphs(16, 8)
    pipeline.close()


# ---- the double against the real cuda-python ------------------------------------------------------


def _cuda_calls_in_runtime() -> set[str]:
    source = Path(inspect.getsourcefile(cuda_module)).read_text()
    return set(re.findall(r'call\([^,]+, "(cuda\w+)"', source)) | set(re.findall(r"rt\.(cuda\w+)\(", source))


def _parameters(function) -> list[str]:
    first = (function.__doc__ or "").strip().splitlines()[0]
    inside = first[first.index("(") + 1: first.rindex(")")]
    return [p.split(":")[0].split()[-1] for p in inside.split(",") if p.strip()]


def test_double_matches_the_real_cuda_python_api():
    real = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (extra 'dev' or 'gpu') is not installed")
    fake = make_fake_cudart()
    used = _cuda_calls_in_runtime()
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaStreamBeginCapture", "cudaGraphLaunch"} <= used
    for name in sorted(used):
        assert hasattr(real, name), f"cuda-python has no {name}"
        assert hasattr(fake, name), f"the double lacks {name}"
        if inspect.isclass(getattr(real, name)):  # cudaStream_t
            continue
        fake_params = list(inspect.signature(getattr(fake, name)).parameters)
        assert len(_parameters(getattr(real, name))) == len(fake_params), name
    for enum_name, member in [("cudaMemcpyKind", "cudaMemcpyHostToDevice"), ("cudaMemcpyKind", "cudaMemcpyDeviceToDevice"),
                              ("cudaMemoryType", "cudaMemoryTypeDevice"),
                              ("cudaStreamCaptureMode", "cudaStreamCaptureModeThreadLocal")]:
        assert hasattr(getattr(real, enum_name), member) and hasattr(getattr(fake, enum_name), member)
    assert hasattr(real, "cudaStreamNonBlocking") and hasattr(real, "cudaStream_t")
    result = real.cudaGetDeviceCount()  # no GPU here: an error code, never an exception
    assert isinstance(result, tuple) and len(result) == 2


# ---- Segmenter on TensorRT plans, end to end (plans "run" their ONNX graph with ONNX Runtime CPU) ------


def onnx_backed_tensorrt(rt):
    """A ``tensorrt`` double whose plans are b"PLAN:<onnx file>": the engine has that graph's I/O and
    executing it runs the graph under ONNX Runtime CPU on the cuda double's memory."""
    import onnxruntime as ort

    trt = make_fake_tensorrt(cudart=rt)
    types = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(bool)": "BOOL", "tensor(int64)": "INT64"}

    class Engine:
        def __init__(self, onnx_path):
            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            args = [(a, "INPUT") for a in self.session.get_inputs()] + [(a, "OUTPUT") for a in self.session.get_outputs()]
            self._order = [a.name for a, _ in args]
            self._tensors = {}
            for arg, mode in args:
                shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
                profile = (tuple(1 if d < 0 else d for d in shape), tuple(2 if d < 0 else d for d in shape),
                           tuple(512 if d < 0 else d for d in shape)) if mode == "INPUT" else None
                self._tensors[arg.name] = (mode, types[arg.type], shape, profile)

        num_io_tensors = property(lambda self: len(self._order))

        def get_tensor_name(self, index):
            return self._order[index]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode[self._tensors[name][0]]

        def get_tensor_dtype(self, name):
            return trt.DataType[self._tensors[name][1]]

        def get_tensor_shape(self, name):
            return self._tensors[name][2]

        def get_tensor_profile_shape(self, name, index):
            return list(self._tensors[name][3])

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            feeds = {n: np.zeros(s, NUMPY[self.engine._tensors[n][1]]) for n, s in self.shapes.items()}
            index = self.engine._order.index(name) - len(self.shapes)
            return self.engine.session.run(None, feeds)[index].shape  # output shape for these input shapes

        def set_tensor_address(self, name, address):
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream):
            tensors = self.engine._tensors
            inputs = [n for n in self.engine._order if tensors[n][0] == "INPUT"]
            outputs = [n for n in self.engine._order if tensors[n][0] == "OUTPUT"]
            out_shapes = {n: self.get_tensor_shape(n) for n in outputs}

            def run():
                feeds = {n: rt.read(self.addresses[n], self.shapes[n], NUMPY[tensors[n][1]]) for n in inputs}
                for name, value in zip(outputs, self.engine.session.run(outputs, feeds)):
                    assert value.shape == out_shapes[name]
                    rt.write(self.addresses[name], value)

            rt.enqueue(stream, run)
            return True

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            return Engine(data.decode().removeprefix("PLAN:")) if data.startswith(b"PLAN:") else None

    trt.Runtime = Runtime
    return trt


@pytest.fixture
def tensorrt_engines(demo_engines, tmp_path):
    """A copy of the demo engines with an fp32 TensorRT set whose plans point at the ONNX graphs."""
    import hashlib
    import json
    import shutil

    directory = tmp_path / "engines"
    shutil.copytree(demo_engines[0], directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    plans = {}
    for stage, onnx_file in manifest["sets"]["fp32"]["onnx"].items():
        record = next(a for a in manifest["artifacts"] if a["file"] == onnx_file and a["runtime"] == "onnx")
        plan = directory / f"{stage}.fp32.plan"
        plan.write_bytes(b"PLAN:" + str(directory / onnx_file).encode())
        plans[stage] = plan.name
        manifest["artifacts"].append({**record, "runtime": "tensorrt", "file": plan.name, "external_data": [],
                                      "bytes": plan.stat().st_size,
                                      "sha256": hashlib.sha256(plan.read_bytes()).hexdigest()})
    manifest["sets"]["fp32"]["tensorrt"] = plans
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_segmenter_on_tensorrt_plans_keeps_stages_on_the_device(tensorrt_engines, monkeypatch):
    from genmask_sdk import Segmenter
    from genmask_sdk.data.examples import example_image_path
    from genmask_sdk.runtime import tensorrt_runner, trt_api

    rt = make_fake_cudart()
    trt = onnx_backed_tensorrt(rt)
    monkeypatch.setattr(cuda_module, "import_cudart", lambda: rt)
    monkeypatch.setattr(trt_api, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_runner, "import_tensorrt", lambda: trt)
    prompts = ["the red circle", "the orange star", "the shape on the left"]
    reference = Segmenter.from_engines(tensorrt_engines, backend="onnxruntime", device="cpu")
    expected = reference.predict(example_image_path(), prompts)
    with Segmenter.from_engines(tensorrt_engines, backend="tensorrt", device="cuda") as seg:
        info = seg.describe()
        assert info["backend"] == "tensorrt" and info["device"] == "cuda:0"
        assert any(f["option"] == "text_embedder on cuda" for f in info["fallbacks"])  # CPU onnxruntime here
        seg.set_image(example_image_path())
        before = len(rt.record.copies())
        results = seg.predict(prompts)
        copies = rt.record.copies()[before:]
    for ours, ref in zip(results, expected):
        np.testing.assert_allclose(ours.logits, ref.logits, rtol=0, atol=1e-5)
    # per predict: the context and its mask go up, the logits come down; z_img and x0 stay on the device
    assert copies.count("HostToDevice") == 2 and copies.count("DeviceToHost") == 1, copies
    gc.collect()
    assert not rt.record.live and not rt.record.streams
