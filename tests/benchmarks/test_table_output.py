import io

from benchmarks.table_output import column_groups, markdown, print_table, write_table

HEADER = ["variant", *(f"a rather long column name {j}" for j in range(8))]
ROWS = [["conventional_pipeline_name", *(f"{j * 1234.5:,.1f}" for j in range(8))], ["from_layer4", *["—"] * 8]]


def test_off_a_terminal_lines_fit_and_no_cell_is_cut():
    out = io.StringIO()
    print_table("title", HEADER, ROWS, stream=out, width=120)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 120
    for cell in [*HEADER, *ROWS[0], "from_layer4"]:
        assert cell in text
    assert text.count("conventional_pipeline_name") == len(column_groups(HEADER, ROWS, 120)) > 1


def test_groups_cover_every_column_once_after_the_first():
    groups = column_groups(HEADER, ROWS, 80)
    assert all(g[0] == 0 for g in groups)
    assert sorted(j for g in groups for j in g[1:]) == list(range(1, len(HEADER)))


def test_markdown_aligns_numbers_right_and_files_hold_the_whole_table(tmp_path):
    text = markdown(["name", "bytes"], [["a", "1,024"], ["b", "—"]])
    assert text.splitlines()[1] == "|---|---:|"
    md, csv_path = write_table(tmp_path / "t", HEADER, ROWS)
    assert md.read_text().count("\n") == 4
    assert csv_path.read_text().splitlines()[0].startswith("variant,a rather long column name 0")
