"""tools/benchmark.py --archs deploy_SIZE: the deploy routes' table (paired ratios, build time,
accuracy columns from --accuracy, the operator breakdown). Speeds are never asserted."""
import pytest
import timm
import torch

import models
from distill.benchmark import deploy
from distill.cli import benchmark as benchmark_tool
from helpers import randomize, skip_openvino_under_onednn_cap

pytestmark = pytest.mark.slow          # trains, exports or runs a tool end to end

FAST_FORMS = 'fp32,bf16,ort,ort-int8,openvino,openvino-int8'


def deploy_table(out):
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('deploy routes'))
    header = lines[start + 1]
    rows = []
    for line in lines[start + 3:]:
        if not line.strip():
            break
        rows.append(line.split())
    return header, rows


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ckpt')
    student = models.reparameterize(randomize(timm.create_model('riformer_mini', num_classes=10), seed=3).eval())
    teacher = randomize(timm.create_model('poolformer_mini', num_classes=10), seed=4).eval()
    models.save_model(folder / 'student.deploy.safetensors', student)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(folder / 'teacher.safetensors'),
              metadata={'format': 'timm', 'arch': 'poolformer_mini', 'num_classes': '10'})
    return folder / 'student.deploy.safetensors', folder / 'teacher.safetensors'


def test_deploy_routes_table_with_accuracy_and_breakdown(checkpoints, tmp_path, capsys):
    pytest.importorskip('openvino')
    skip_openvino_under_onednn_cap()            # the table has OpenVINO rows
    student, teacher = checkpoints
    md = tmp_path / 'deploy.md'
    code = benchmark_tool.main(['--smoke', '--archs', 'deploy_mini', '--forms', FAST_FORMS, '--threads', '1',
                                '--reps', '2', '--profile', '--accuracy', 'recipes/digits/imitation.yaml',
                                '--student', str(student), '--teacher', str(teacher), '--markdown', str(md)])
    out, err = capsys.readouterr()
    assert code == 0, err
    header, rows = deploy_table(out)
    for column in ('vs PoolFormer fp32', 'vs deploy fp32', 'vs PoolFormer same form', 'top-1', 'agree fp32'):
        assert column in header
    forms = [(r[0], r[1]) for r in rows]
    assert forms == [('poolformer_mini', 'fp32'), ('poolformer_mini', 'bf16')] + [
        ('riformer_mini', f) for f in FAST_FORMS.split(',')]
    by = {(r[0], r[1]): r for r in rows}
    # Paired ratios: a baseline against itself is exactly 1; RIFormer bf16 is read against PoolFormer bf16.
    assert '1.00x' in by['poolformer_mini', 'fp32'] and '1.00x' in by['riformer_mini', 'fp32']
    # Accuracy: fp32 agrees with itself; every route has top-1 and agreement (means over --student).
    assert by['riformer_mini', 'fp32'][-2] == '100.00' and by['poolformer_mini', 'fp32'][-2] == '100.00'
    assert all(r[-3] != '-' and r[-2] != '-' for r in rows)
    assert 'group norm' in out and 'self CPU ms per call' in out
    per_checkpoint = out.split('accuracy per checkpoint')[1]
    assert per_checkpoint.count(str(student)) == len(FAST_FORMS.split(',')) and per_checkpoint.count(str(teacher)) == 2
    assert '+0.00' in per_checkpoint                      # fp32 against itself
    text = md.read_text()
    assert 'Deploy routes:' in text and '| riformer_mini | ort-int8 | int8 | onnxruntime |' in text
    # int8 rows name the instructions their kernels ran on and the bits they quantized to.
    assert f'| ort-int8 | int8 | onnxruntime | {deploy.int8_isa("ort-int8")} |' in text
    assert '| riformer_mini | fp32 | fp32 | pytorch | - |' in text
    assert 'cpu flags' in text and 'Accuracy per checkpoint' in text


def test_int8_rows_name_the_instructions_they_ran_on(monkeypatch):
    import models.cpu
    from models import quantize as q

    def cpu(flags, cap=None):
        monkeypatch.setattr(models.cpu, 'cpu_flags', lambda path='/proc/cpuinfo': set(flags))
        monkeypatch.setattr(models.cpu.platform, 'machine', lambda: 'x86_64')
        monkeypatch.delenv(q.TARGET_ENV, raising=False)
        monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
        if cap:
            monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', cap)
    cpu({'avx2', 'fma'})
    assert [deploy.int8_isa(f) for f in ('int8', 'ort-int8', 'openvino-int8', 'fp32')] == ['avx2/7-bit'] * 3 + ['-']
    cpu({'avx2', 'avx512bw', 'avx512_vnni'})
    assert deploy.int8_isa('int8') == 'avx512_vnni/8-bit'
    cpu({'avx2', 'avx512bw', 'avx512_vnni'}, cap='AVX512_CORE')       # oneDNN capped below VNNI
    assert deploy.int8_isa('int8') == 'avx512/7-bit' and deploy.int8_isa('ort-int8') == 'avx512_vnni/8-bit'


def test_accuracy_options_need_each_other(checkpoints, capsys):
    student, _ = checkpoints
    assert benchmark_tool.main(['--smoke', '--archs', 'deploy_mini', '--student', str(student)]) == 2
    assert '--accuracy' in capsys.readouterr().err
    assert benchmark_tool.main(['--smoke', '--accuracy', 'recipes/digits/imitation.yaml']) == 2
    assert '--student' in capsys.readouterr().err
    code = benchmark_tool.main(['--smoke', '--accuracy', 'missing.yaml', '--student', str(student)])
    assert code == 2 and 'missing.yaml: no such file' in capsys.readouterr().err


def test_paired_ratios_and_categories():
    rows = [{'group': 'deploy-mini', 'batch': 2, 'model': m, 'form': f, 'seconds': s}
            for m, f, s in [('poolformer_mini', 'fp32', [2., 4.]), ('poolformer_mini', 'bf16', [1., 1.]),
                            ('riformer_mini', 'fp32', [1., 2.]), ('riformer_mini', 'bf16', [0.5, 0.5])]]
    deploy.paired(rows)
    r = rows[3]
    assert r['vs_poolformer_fp32'][0] == 6. and r['vs_deploy_fp32'][0] == 3. and r['vs_poolformer_same'][0] == 2.
    assert rows[1]['vs_poolformer_same'] is None
    assert deploy.categorize('aten::native_group_norm') == 'group norm'
    assert deploy.categorize('onednn::qconv_pointwise') == 'int8 conv/linear'
    assert deploy.categorize('aten::copy_') == 'layout copies'
    # Inductor's kernels, named by the ops they fuse (name_inductor_kernels).
    assert deploy.categorize('graph_0_cpp_fused_add_native_group_norm_quantize_per_tensor_1') == 'group norm'
    assert deploy.categorize('graph_0_cpp_fused_gelu_quantize_per_tensor_2') == 'elementwise'
    assert deploy.categorize('graph_0_cpp_fused_quantize_per_tensor_0') == 'quant/dequant'
    assert deploy.categorize('## Call CompiledFxGraph None ##') == 'compiled-graph overhead'


def test_openvino_rows_are_skipped_with_a_reason_under_onednn_isa_cap(monkeypatch, capsys):
    """OpenVINO's int8 kernels crash the process under ONEDNN_MAX_CPU_ISA: the benchmark says so
    and times the other rows; a direct call answers with one line instead of a segfault."""
    from models import quantize as q
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX2')
    code = benchmark_tool.main(['--smoke', '--archs', 'deploy_mini', '--forms', 'fp32,openvino-int8',
                                '--threads', '1', '--reps', '1'])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert 'skip riformer_mini openvino-int8: OpenVINO does not follow ONEDNN_MAX_CPU_ISA=AVX2' in out
    assert [(r[0], r[1]) for r in deploy_table(out)[1]] == [('poolformer_mini', 'fp32'), ('riformer_mini', 'fp32')]
    with pytest.raises(q.UsageError, match='unset ONEDNN_MAX_CPU_ISA'):
        q.openvino_runner(object())
    monkeypatch.delenv('ONEDNN_MAX_CPU_ISA')
    assert q.openvino_refusal() is None


def test_norm_path_rows_time_the_other_block_path_against_poolformer_in_the_same_form(monkeypatch):
    # Each PyTorch form has a RIFormer row with the other deploy norm path (issue 29), read
    # against PoolFormer in its base form, and its kernels counted as one-pass norms.
    forms = [c.form for c in deploy.deploy_cases('mini') if c.model == 'riformer_mini']
    assert forms[:8] == ['fp32', 'fp32:one-pass', 'bf16', 'bf16:one-pass', 'compiled', 'compiled:two-norms',
                         'int8', 'int8:two-norms']
    rows = [{'group': 'deploy-mini', 'batch': 2, 'model': m, 'form': f, 'seconds': s}
            for m, f, s in [('poolformer_mini', 'fp32', [2., 4.]), ('riformer_mini', 'fp32', [1., 2.]),
                            ('riformer_mini', 'fp32:one-pass', [0.5, 1.])]]
    deploy.paired(rows)
    assert rows[2]['vs_poolformer_same'][0] == 4. and rows[2]['vs_deploy_fp32'][0] == 2.
    paths = []
    monkeypatch.setattr(models.RIFormer, 'set_norm_path', lambda self, path: paths.append(path) or self)
    model = models.reparameterize(timm.create_model('riformer_mini', num_classes=10).eval())
    deploy.build_route('fp32:one-pass', model, [], torch.zeros(1, 3, 32, 32), 1, None)
    assert paths == ['one-pass']
    assert deploy.categorize('graph_4_cpp_fused_add_mean_mul_pow_rsqrt_sub_view_0') == 'one-pass norms'
    assert deploy.categorize('graph_1_cpp_fused_add_mul_unbind_view_0') == 'one-pass norms'
