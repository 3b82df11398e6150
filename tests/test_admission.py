"""What the service admits beyond the spec: outputs under its roots once symlinks are resolved, writable."""

from __future__ import annotations

import pytest

from cluster.admission import check_output_dir
from cluster.errors import SpecError


def test_outputs_inside_a_root_are_admitted(tmp_path):
    root = tmp_path / "outputs"
    root.mkdir()
    check_output_dir(str(root), [str(root)])
    check_output_dir(str(root / "shots" / "042"), [str(root)])  # created when the job writes
    check_output_dir(str(tmp_path / "anywhere"), None)  # no roots: an embedded client's own machine


@pytest.mark.parametrize(
    "where",
    [
        lambda root, tmp: tmp / "elsewhere",
        lambda root, tmp: root / ".." / "elsewhere",
        lambda root, tmp: root.parent / (root.name + "-sibling"),  # a prefix of the root's name is not inside it
    ],
)
def test_outputs_outside_the_roots_are_refused_naming_the_field(tmp_path, where):
    root = tmp_path / "outputs"
    root.mkdir()
    with pytest.raises(SpecError) as caught:
        check_output_dir(str(where(root, tmp_path)), [str(root)])
    assert caught.value.field == "output_dir" and "outside the output roots" in caught.value.message


def test_a_symlink_out_of_the_root_is_resolved_and_refused(tmp_path):
    root, outside = tmp_path / "outputs", tmp_path / "private"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(SpecError, match="outside the output roots"):
        check_output_dir(str(root / "link" / "job"), [str(root)])


def test_a_file_in_the_way_and_a_nul_byte_are_refused(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(SpecError, match="cannot be a directory"):
        check_output_dir(str(tmp_path / "taken" / "job"), None)
    with pytest.raises(SpecError, match="NUL byte"):
        check_output_dir(str(tmp_path) + "\0x", None)
