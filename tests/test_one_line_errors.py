"""distill.errors.one_line_errors, the one handler of every command's errors and of the trainer's:
an error of ours is one `error:` line per problem and exit 2, an error every process of a launch
shares is printed by the first process only, anything else keeps its traceback."""
import pytest

from distill.errors import RecipeError, one_line_errors
from distill.preflight import InputErrors


class Shared(RuntimeError):
    same_on_every_process = True


def raising(error):
    def main(argv=None):
        raise error
    return main


def test_an_error_of_ours_is_one_line_and_exit_2(capsys):
    assert one_line_errors(raising(RecipeError('bad key')))([]) == 2
    assert capsys.readouterr().err == 'error: bad key\n'


def test_every_input_problem_gets_its_own_line(capsys):
    assert one_line_errors(raising(InputErrors(['no teacher file', 'no data folder'])))([]) == 2
    assert capsys.readouterr().err == 'error: no teacher file\nerror: no data folder\n'


def test_other_errors_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        one_line_errors(raising(ZeroDivisionError('a bug')))([])


@pytest.mark.parametrize('rank, printed', [('0', 'error: disk full\n'), ('1', '')])
def test_an_error_every_process_shares_is_printed_once(rank, printed, monkeypatch, capsys):
    monkeypatch.setenv('RANK', rank)
    main = one_line_errors(also=(Shared,))(raising(Shared('disk full')))
    assert main([]) == 2 and capsys.readouterr().err == printed
    # an error of one process is printed by that process, whatever its rank
    assert one_line_errors(raising(RecipeError('mine')))([]) == 2
    assert capsys.readouterr().err == 'error: mine\n'


def test_the_lines_can_depend_on_the_arguments(capsys):
    main = one_line_errors(lines=lambda e, argv: [f'{e}; resume with: {" ".join(argv)} resume=true'])(
        raising(RecipeError('write failed')))
    assert main(['recipe.yaml']) == 2
    assert capsys.readouterr().err == 'error: write failed; resume with: recipe.yaml resume=true\n'
