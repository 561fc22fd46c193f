"""migpool.cli: `export`'s comments and the catalog's note fit 80 columns; a newcomer's rough edge, fixed."""

from migpool_cli import mp


def test_export_comments_and_the_catalog_note_fit_80_columns():
    sim = ["--simulate", "A100-80GB:2"]
    mp("apply", "3g.40gb:1,1g.10gb:2", "--gpu", "0", *sim, check=0)
    for fmt in ("--slurm", "--k8s"):
        out = mp("export", fmt, *sim, check=0, env={"COLUMNS": "80"}).stdout
        long = [ln for ln in out.splitlines() if len(ln) > 80]
        # a gres.conf record must stay on one line: only those may be longer, never a comment
        assert all(ln.startswith("NodeName=") and "#" not in ln for ln in long), long
    note = mp("catalog", check=0, env={"COLUMNS": "80"}).stderr
    assert "note:" in note and all(len(ln) <= 80 for ln in note.splitlines())
