import io

from rich.console import Console

from benchmarks.table_output import column_groups, markdown_table, print_table, write_table

COLUMNS = ["variant", *(f"a rather long column name {j}" for j in range(8))]
ROWS = [
    {"variant": "conventional_pipeline_name", **{c: f"{j * 1234.5:,.1f}" for j, c in enumerate(COLUMNS[1:])}},
    {"variant": "from_layer4", **dict.fromkeys(COLUMNS[1:], "—")},
]


def test_off_a_terminal_lines_fit_and_no_cell_is_cut():
    out = io.StringIO()
    print_table(COLUMNS, ROWS, title="title", console=Console(file=out), width=120, keys=1)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 120
    for cell in [*COLUMNS, *ROWS[0].values(), "from_layer4"]:
        assert cell in text
    assert text.count("conventional_pipeline_name") == len(column_groups(COLUMNS, ROWS, 120)) > 1


def test_groups_cover_every_column_once_after_the_first():
    groups = column_groups(COLUMNS, ROWS, 80, keys=2)
    assert all(g[:2] == COLUMNS[:2] for g in groups)
    assert sorted(c for g in groups for c in g[2:]) == sorted(COLUMNS[2:])


def test_without_a_width_each_row_is_one_line():
    out = io.StringIO()
    print_table(COLUMNS, ROWS, console=Console(file=out))
    assert sum(line.startswith("| conventional_pipeline_name ") for line in out.getvalue().splitlines()) == 1


def test_markdown_aligns_right_columns_and_files_hold_the_whole_table(tmp_path):
    text = markdown_table(["name", "bytes"], [{"name": "a", "bytes": "1,024"}, {"name": "b"}], right=["bytes"])
    assert text.splitlines()[1] == "| ---- | ----: |"
    md, csv_path = write_table(COLUMNS, ROWS, tmp_path / "t", title="T")
    assert md.read_text().count("\n") == 6
    assert csv_path.read_text().splitlines()[0].startswith("variant,a rather long column name 0")
