"""migpool.cli: a usage error is one `error:` line with exit 2; a newcomer's rough edge, fixed."""

from migpool_cli import mp


def test_a_usage_error_is_one_error_line_with_exit_2():
    for args in (["apply", "--bogus"], ["nosuch"], ["plan"], ["apply", "3g.40gb", "-n", "two"]):
        r = mp(*args, "--simulate", "A100-80GB") if args[0] != "nosuch" else mp(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)
        assert "--help" in lines[0] and "Usage:" not in r.stdout + r.stderr
