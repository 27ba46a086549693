"""``%%reason --isolated`` looks for new files next to the notebook only, so a large notebook
folder costs nothing per block (issue 15, item 9: 50 trivial blocks took 15 s beside 10,000 files;
now about what the shared namespace takes)."""

from __future__ import annotations

from kernel_bridge import Kernel


async def test_track_depth_zero_reports_the_workspaces_own_files_only(tmp_path):
    (tmp_path / "data").mkdir()
    kernel = Kernel(workspace=str(tmp_path), track_depth=0)
    await kernel.start()
    try:
        result = await kernel.execute(
            "open('top.txt', 'w').write('x')\nopen('data/deep.txt', 'w').write('x')"
        )
    finally:
        await kernel.shutdown()
    assert result.status == "ok"
    assert result.new_files == ["top.txt"]


async def test_without_a_depth_every_level_is_searched(tmp_path):
    (tmp_path / "data").mkdir()
    kernel = Kernel(workspace=str(tmp_path))
    await kernel.start()
    try:
        result = await kernel.execute("open('data/deep.txt', 'w').write('x')")
    finally:
        await kernel.shutdown()
    assert result.new_files == ["data/deep.txt"]
