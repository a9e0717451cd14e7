"""The teacher's forward (distill/teacher.py, models/poolformer_fused.py): the fused fp32
PoolFormer path is exact and records the same features, bf16 is chosen from the CPU flags and
falls back to fp32 without them, feature pairs share one layout, compile keeps the recorders,
and the finite-loss check needs no per-step sync."""
import copy

import pytest
import timm
import torch
import torch.nn as nn

import models
from models import poolformer_fused
from distill import teacher as teacher_mod
from distill.config import DistillConfig, RecipeError, SoftTermConfig, TermConfig, load_recipe
from distill.criterion import DistillationCriterion
from distill.engine import FiniteGuard, NonFiniteLoss
from distill.recorders import FeatureRecorder, default_imitated_blocks
from helpers import randomize

AVX2_FLAGS = set('fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi1 bmi2'.split())
SPR_FLAGS = AVX2_FLAGS | {'avx512f', 'avx512bw', 'avx512_bf16', 'amx_bf16', 'amx_tile'}
LAYOUTS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}


def relative_error(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def poolformer(arch='poolformer_mini', seed=0):
    return randomize(timm.create_model(arch, num_classes=10), seed).eval().requires_grad_(False)


# --- the fused PoolFormer inference path ---------------------------------------------------------

@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('arch', ['poolformer_mini', 'poolformer_s12'])
def test_fused_poolformer_is_exact_and_keeps_layout(arch, layout):
    reference = poolformer(arch).to(memory_format=LAYOUTS[layout])
    fused = copy.deepcopy(reference)
    assert models.fuse_poolformer(fused) == sum(len(s.blocks) for s in reference.stages)
    assert list(fused.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=LAYOUTS[layout])
    calls = []
    original = models.PoolFormerInferenceBlock._forward_fused
    with torch.inference_mode(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(models.PoolFormerInferenceBlock, '_forward_fused',
                   lambda self, x: calls.append(1) or original(self, x))
        want, got = reference(x), fused(x)
    assert len(calls) == sum(len(s.blocks) for s in reference.stages)     # the fused path ran
    assert relative_error(got, want) < 1e-5
    features = fused.forward_intermediates(x, intermediates_only=True)
    for f in features:
        assert f.is_contiguous(memory_format=LAYOUTS[layout])


def test_fused_poolformer_in_bf16_matches_the_bf16_reference():
    reference = poolformer('poolformer_s12').to(torch.bfloat16, memory_format=torch.channels_last)
    fused = copy.deepcopy(reference)
    models.fuse_poolformer(fused)
    x = torch.randn(2, 3, 64, 64).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    calls = []
    original = models.PoolFormerInferenceBlock._forward_fused
    with torch.inference_mode(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(models.PoolFormerInferenceBlock, '_forward_fused',
                   lambda self, x: calls.append(1) or original(self, x))
        want, got = reference(x), fused(x)
    assert got.dtype == torch.bfloat16
    if poolformer_fused._ONEDNN_BF16:
        assert len(calls) == 12
        assert relative_error(got, want) < 2e-2       # bf16 rounding (8 bits), differently ordered
    else:
        # AVX2-only CPU: oneDNN has no fused bf16 convolutions; the reference forward runs.
        assert calls == [] and torch.equal(got, want)


def test_fused_poolformer_records_the_reference_features():
    reference = poolformer()
    fused = copy.deepcopy(reference)
    models.fuse_poolformer(fused)
    blocks = default_imitated_blocks(reference)
    names = [b + sub for b in blocks for sub in ('', '.norm1', '.token_mixer')]
    x = torch.randn(3, 3, 64, 64)      # 2 x 2 maps at the last stage: the pooling mixer is not zero
    with torch.inference_mode(), FeatureRecorder(reference, names) as rr, FeatureRecorder(fused, names) as rf:
        reference(x)
        fused(x)
        for name, want, got in zip(names, rr.take(), rf.take()):
            assert relative_error(got, want) < 1e-5, name


def test_fused_poolformer_reference_path_for_training_and_autograd():
    fused = poolformer()
    models.fuse_poolformer(fused)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models.PoolFormerInferenceBlock, '_forward_fused', lambda self, x: pytest.fail('fused path'))
        fused.train()(torch.randn(2, 3, 32, 32))                      # training mode
        x = torch.randn(2, 3, 32, 32, requires_grad=True)
        fused.eval()(x).sum().backward()                               # autograd
        assert x.grad is not None


def test_fuse_refuses_blocks_with_hooks():
    model = poolformer()
    model.stages[0].blocks[0].register_forward_hook(lambda *a: None)
    with pytest.raises(RuntimeError, match='already has hooks'):
        models.fuse_poolformer(model)


# --- precision: bf16 from the CPU flags ---------------------------------------------------------

def test_cpu_flags_parsed_from_cpuinfo(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n\n'
                    'processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n')
    assert teacher_mod.cpu_flags(str(info)) == {'fpu', 'avx2', 'avx512_bf16', 'amx_bf16'}
    info.write_text('processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n')
    assert 'bf16' in teacher_mod.cpu_flags(str(info))
    assert teacher_mod.cpu_flags(str(tmp_path / 'missing')) == set()


@pytest.mark.parametrize('flags, capability, machine, expected', [
    (SPR_FLAGS, 'AVX512', 'x86_64', 'amx_bf16,avx512_bf16'),
    (AVX2_FLAGS | {'avx512f'}, 'AVX512', 'x86_64', ''),            # AVX-512 without BF16
    (AVX2_FLAGS, 'AVX2', 'x86_64', ''),
    (SPR_FLAGS, 'AVX2', 'x86_64', ''),                              # ATEN_CPU_CAPABILITY=avx2
    ({'fp', 'asimd', 'bf16'}, 'DEFAULT', 'aarch64', 'bf16'),
    ({'fp', 'asimd'}, 'DEFAULT', 'aarch64', ''),
])
def test_cpu_bf16_support(flags, capability, machine, expected):
    assert teacher_mod.cpu_bf16_support(flags, capability, machine) == expected


def fake_cpu(monkeypatch, flags, capability):
    import models.cpu
    monkeypatch.setattr(models.cpu, 'cpu_flags', lambda path='/proc/cpuinfo': set(flags))
    monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability', lambda: capability)
    monkeypatch.setattr(models.cpu.platform, 'machine', lambda: 'x86_64')


def test_auto_falls_back_to_fused_fp32_on_avx2_only(monkeypatch):
    fake_cpu(monkeypatch, AVX2_FLAGS, 'AVX2')
    assert teacher_mod.resolve_precision('auto', 'cpu') == torch.float32
    assert teacher_mod.resolve_precision('bf16', 'cpu') == torch.bfloat16      # asked for: honoured
    teacher = teacher_mod.prepare_teacher(poolformer(), 'cpu', 'auto')
    assert teacher_mod.teacher_dtype(teacher) == torch.float32
    assert any(isinstance(m, models.PoolFormerInferenceBlock) for m in teacher.modules())
    assert teacher_mod.describe(teacher, 'cpu') == 'fp32'
    bf16 = teacher_mod.prepare_teacher(poolformer(), 'cpu', 'bf16')
    assert 'emulated' in teacher_mod.describe(bf16, 'cpu')


def test_auto_is_bf16_where_native(monkeypatch):
    fake_cpu(monkeypatch, SPR_FLAGS, 'AVX512')
    teacher = teacher_mod.prepare_teacher(poolformer(), 'cpu', 'auto')
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}
    assert any(isinstance(m, models.PoolFormerInferenceBlock) for m in teacher.modules())
    assert teacher_mod.describe(teacher, 'cpu') == 'bf16 (native: amx_bf16,avx512_bf16)'
    with pytest.raises(ValueError, match='use one of fp32, bf16, auto'):
        teacher_mod.resolve_precision('fp16', 'cpu')


def test_recipe_values_are_checked(tmp_path):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('teacher: {arch: poolformer_mini, checkpoint: t.safetensors}\ndistill: {soft: {weight: 1.0}}\n')
    assert load_recipe(recipe).teacher.precision == 'fp32'
    assert load_recipe(recipe, ['teacher.precision=auto', 'teacher.compile=inductor']).teacher.compile == 'inductor'
    with pytest.raises(RecipeError, match=r"teacher.precision 'fp16': use fp32 \| bf16 \| auto"):
        load_recipe(recipe, ['teacher.precision=fp16'])
    with pytest.raises(RecipeError, match=r"student.compile 'fast': use null \(off\) or inductor"):
        load_recipe(recipe, ['student.compile=fast'])


# --- the criterion with a prepared teacher -------------------------------------------------------

def imitation_criterion(student, teacher):
    on = TermConfig(weight=1.0)
    cfg = DistillConfig(soft=SoftTermConfig(weight=1.0), l_in_hidden=on, l_out=on, l_rel=on)
    return DistillationCriterion(cfg, student, teacher, None, default_imitated_blocks(student))


@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_feature_pairs_share_the_students_layout(layout):
    fmt = LAYOUTS[layout]
    student = randomize(timm.create_model('riformer_mini', num_classes=10)).to(memory_format=fmt)
    teacher = teacher_mod.prepare_teacher(poolformer(), 'cpu', 'fp32', fmt)
    criterion = imitation_criterion(student, teacher)
    pairs = []
    for term in ('l_in_hidden', 'l_out', 'l_rel'):
        loss = criterion.losses[term]
        original = loss.forward
        loss.forward = lambda s, t, original=original: pairs.extend(zip(s, t)) or original(s, t)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=fmt)     # no 1 x 1 maps: strides tell layouts apart
    total, _ = criterion(x, student(x), None, epoch=0)
    assert torch.isfinite(total) and len(pairs) == 12
    for s, t in pairs:
        assert s.stride() == t.stride() and s.is_contiguous(memory_format=fmt)


def test_bf16_teacher_targets_near_fp32_and_losses_in_float32():
    student = randomize(timm.create_model('riformer_mini', num_classes=10))
    fp32 = teacher_mod.prepare_teacher(poolformer(), 'cpu', 'fp32')
    bf16 = teacher_mod.prepare_teacher(poolformer(), 'cpu', 'bf16')
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        want, got = teacher_mod.run_teacher(fp32, x), teacher_mod.run_teacher(bf16, x)
    assert got.dtype == torch.bfloat16 and 0 < relative_error(got, want) < 0.05
    terms32 = imitation_criterion(student, fp32)(x, student(x), None, epoch=0)[1]
    terms16 = imitation_criterion(student, bf16)(x, student(x), None, epoch=0)[1]
    for name in terms32:
        assert terms16[name].dtype == torch.float32
        assert terms16[name].item() == pytest.approx(terms32[name].item(), rel=0.05), name


def test_teacher_precision_is_not_overridden_by_student_autocast():
    teacher = teacher_mod.prepare_teacher(poolformer(), 'cpu', 'fp32')
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.inference_mode():
        logits = teacher_mod.run_teacher(teacher, torch.randn(2, 3, 32, 32))
    assert logits.dtype == torch.float32


# --- torch.compile ---------------------------------------------------------------------------------

@pytest.mark.parametrize('mode', ['eager', 'aot_eager'])     # inductor: timed in the benchmark
def test_compiled_teacher_and_student_keep_recorders(mode):
    torch._dynamo.reset()
    ref_student = randomize(timm.create_model('riformer_mini', num_classes=10)).to(memory_format=torch.channels_last)
    student = copy.deepcopy(ref_student)
    reference = imitation_criterion(ref_student, teacher_mod.prepare_teacher(poolformer(), 'cpu', 'fp32'))
    criterion = imitation_criterion(student, teacher_mod.prepare_teacher(poolformer(), 'cpu', 'fp32'))
    teacher_mod.compile_module(criterion.teacher, mode)
    teacher_mod.compile_module(student, mode)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert teacher_mod.warm_up(criterion.teacher, x) > 0
    criterion.clear_records()
    want_total, want = reference(x, ref_student(x), None, epoch=0)
    total, got = criterion(x, student(x), None, epoch=0)
    assert set(got) == {'soft', 'l_in_hidden', 'l_out', 'l_rel'}
    for name in want:
        assert got[name].item() == pytest.approx(want[name].item(), rel=1e-4, abs=1e-6), name
    want_total.backward()
    total.backward()
    for (name, p), q in zip(student.named_parameters(), ref_student.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6), name
    with pytest.raises(ValueError, match='compile mode'):
        teacher_mod.compile_module(nn.Linear(1, 1), 'fast')
    torch._dynamo.reset()


def test_compiled_second_instance_keeps_its_recorders():
    """A second model of a class already compiled in the process (the benchmark's rows) must not
    reuse the first one's code without its hooks: the recorders would get nothing."""
    torch._dynamo.reset()
    x = torch.randn(2, 3, 32, 32)
    first = timm.create_model('riformer_mini', num_classes=10)
    teacher_mod.compile_module(first, 'eager')
    first(x)
    second = timm.create_model('riformer_mini', num_classes=10)
    recorder = FeatureRecorder(second, ['stages.0.blocks.0', 'stages.1.blocks.0'], 'student')
    teacher_mod.compile_module(second, 'eager')
    second(x)
    assert [t.shape[1] for t in recorder.take()] == [32, 64]
    torch._dynamo.reset()


@pytest.mark.parametrize('compiled_faster', [True, False], ids=['compiled-kept', 'eager-kept'])
def test_compile_if_faster_keeps_the_faster_forward_and_the_recorders(compiled_faster, monkeypatch):
    """The trainer's teacher.compile: both forwards are timed on a probe batch, the faster is
    kept (here the timings are forced), and the kept one still feeds the recorders the same
    targets."""
    torch._dynamo.reset()
    student = randomize(timm.create_model('riformer_mini', num_classes=10)).to(memory_format=torch.channels_last)
    teacher = teacher_mod.prepare_teacher(randomize(poolformer()), 'cpu', 'fp32')
    criterion = imitation_criterion(student, teacher)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    want_total, want = criterion(x, student(x), None, epoch=0)
    calls = []

    def forward_seconds(module, images, reps):
        calls.append(module)
        compiled = module is not teacher
        return 1.0 if compiled == compiled_faster else 2.0
    monkeypatch.setattr(teacher_mod, '_forward_seconds', forward_seconds)
    chosen, line = teacher_mod.compile_if_faster(teacher, 'eager', x)
    assert calls[0] is teacher and calls[1] is not teacher            # eager timed, then the compiled one
    assert (chosen is not teacher) == compiled_faster
    assert line.startswith('compiled (eager) in ') and line.endswith(('compiled kept' if compiled_faster else 'eager kept'))
    criterion.clear_records()
    criterion.use_teacher_forward(teacher, chosen)
    assert criterion.teacher is chosen and criterion.logit_teacher is chosen
    total, got = criterion(x, student(x), None, epoch=0)
    for name in want:
        assert got[name].item() == pytest.approx(want[name].item(), rel=1e-5, abs=1e-7), name
    torch._dynamo.reset()


# --- the finite-loss check -------------------------------------------------------------------------

class FakeAccelerator:
    def __init__(self, num_processes=1, others_bad=0.):
        self.num_processes, self.others_bad = num_processes, others_bad

    def reduce(self, tensor, op):
        return tensor + self.others_bad


def test_finite_guard_names_the_first_bad_update():
    guard = FiniteGuard('cpu')
    ok = {'soft': torch.tensor(1.), 'l_out': torch.tensor(2.)}
    guard.observe(torch.tensor(3.), ok, 0)
    guard.check(FakeAccelerator(), epoch=0)                       # finite: nothing happens
    guard.observe(torch.tensor(float('nan')), {'soft': torch.tensor(1.), 'l_out': torch.tensor(float('nan'))}, 5)
    guard.observe(torch.tensor(float('inf')), {'soft': torch.tensor(float('inf')), 'l_out': torch.tensor(1.)}, 6)
    with pytest.raises(NonFiniteLoss, match=r'non-finite loss at epoch 2, update 5: l_out=nan$'):
        guard.check(FakeAccelerator(), epoch=2)


def test_finite_guard_stops_every_process_together():
    guard = FiniteGuard('cpu')
    guard.observe(torch.tensor(1.), {'soft': torch.tensor(1.)}, 0)
    guard.check(FakeAccelerator(2, others_bad=0.), epoch=0)
    with pytest.raises(NonFiniteLoss, match='on another process'):
        guard.check(FakeAccelerator(2, others_bad=1.), epoch=0)


def test_teacher_targets_tool(capsys):
    from distill.cli import teacher_targets
    teacher = poolformer()
    x = torch.randn(2, 3, 64, 64)
    rows, agreement = teacher_targets.target_errors(teacher, x, 'fp32')      # the fused path: exact
    assert [r[0] for r in rows][:2] == ['logits', 'stages.0.blocks.0'] and len(rows) == 1 + 3 * 4
    assert all(r[1] < 1e-5 and r[2] < 1e-5 for r in rows) and agreement == 100
    rows, _ = teacher_targets.target_errors(teacher, x, 'bf16')
    assert all(0 < r[2] < 0.05 for r in rows), rows                          # bf16: ~8 bits of mantissa
    assert teacher_targets.main(['--arch', 'poolformer_mini', '--batch', '2', '--img-size', '32']) == 0
    assert 'same argmax as fp32' in capsys.readouterr().out
    assert teacher_targets.main(['--arch', 'poolformer_nope']) == 2
    assert capsys.readouterr().err.strip() == \
        "error: unknown teacher model 'poolformer_nope'; e.g. poolformer_s12, poolformer_mini"
