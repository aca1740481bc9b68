"""A task directory is somebody else's input: none of its links may pull host files in.

A host folder outside the task holds a secret; each test proves the secret's bytes never reach
the worktree, the scratch repository or a git blob, and that a planted `.git` never runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loopmeter.agents.worktree import repo_from_dir
from loopmeter.errors import ConfigError
from loopmeter.tasks import copy_repo, install_tests, load_task, remove_tests

SECRET = "sk-host-secret-never-copy\n"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    victim = tmp_path / "host"
    victim.mkdir()
    (victim / "id_rsa").write_text(SECRET)
    (victim / "data.jsonl").write_text('{"input": "' + SECRET.strip() + '", "target": "x"}\n')
    return victim


def make_task(root: Path, **toml: str) -> Path:
    task = root / "task"
    (task / "repo").mkdir(parents=True)
    (task / "repo" / "main.py").write_text("print('hi')\n")
    (task / "tests").mkdir()
    (task / "tests" / "test_main.py").write_text("assert True\n")
    lines = {"id": '"t"', "instruction": '"do it"', "check": '"true"', **toml}
    (task / "task.toml").write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
    return task


@pytest.mark.parametrize("sub", ["tests", "repo", "solution"])
def test_a_task_subfolder_linking_out_of_the_task_is_refused(tmp_path: Path, host: Path, sub: str) -> None:
    task = make_task(tmp_path)
    if (task / sub).exists():
        subprocess.run(["rm", "-rf", str(task / sub)], check=True)
    (task / sub).symlink_to(host)
    with pytest.raises(ConfigError) as info:
        load_task(task)
    assert "leads outside the task directory" in info.value.message and SECRET.strip() not in info.value.message


def test_an_instruction_or_dataset_linking_out_is_refused(tmp_path: Path, host: Path) -> None:
    task = make_task(tmp_path)
    (task / "task.toml").write_text('id = "t"\ncheck = "true"\n')
    (task / "instruction.md").symlink_to(host / "id_rsa")
    with pytest.raises(ConfigError, match="leads outside the task directory"):
        load_task(task)
    model = tmp_path / "model"
    model.mkdir()
    (model / "task.toml").write_text(f'id = "m"\nkind = "model"\nscorer = "exact"\ndataset = "../{host.name}/data.jsonl"\n')
    with pytest.raises(ConfigError, match="leads outside the task directory"):
        load_task(model)


def test_a_link_inside_the_task_to_its_own_files_is_fine(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    (task / "shared").mkdir()
    (task / "shared" / "test_x.py").write_text("assert True\n")
    subprocess.run(["rm", "-rf", str(task / "tests")], check=True)
    (task / "tests").symlink_to("shared")
    assert load_task(task).tests_dir == task / "tests"


def test_repo_links_are_committed_as_links_never_as_the_host_bytes(tmp_path: Path, host: Path) -> None:
    task = make_task(tmp_path)
    (task / "repo" / "leak.txt").symlink_to(host / "id_rsa")
    (task / "repo" / "hostdir").symlink_to(host)
    repo = repo_from_dir(load_task(task).repo_dir, tmp_path / "scratch")
    assert (repo / "leak.txt").is_symlink() and (repo / "hostdir").is_symlink()
    tree = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "HEAD"], capture_output=True, text=True,
                          check=True).stdout
    assert "120000 blob" in tree and "hostdir/" not in tree  # links, and nothing from inside the host folder
    blobs = [line.split()[2] for line in tree.splitlines()]
    contents = [subprocess.run(["git", "-C", str(repo), "cat-file", "-p", b], capture_output=True, text=True,
                               check=True).stdout for b in blobs]
    assert not any(SECRET.strip() in c for c in contents)
    work = copy_repo(load_task(task), tmp_path / "copy")
    assert (work / "leak.txt").is_symlink() and not any(SECRET.strip() in p.read_text()
                                                          for p in work.rglob("*") if p.is_file()
                                                          and not p.is_symlink())


@pytest.mark.parametrize("where", [".git", "sub/.git"])
def test_a_task_repo_carrying_a_git_dir_is_refused_and_its_config_never_runs(tmp_path: Path, where: str) -> None:
    task = make_task(tmp_path)
    marker = tmp_path / "fsmonitor-ran"
    git_dir = task / "repo" / where
    git_dir.mkdir(parents=True)
    (git_dir / "config").write_text(f"[core]\n\tfsmonitor = touch {marker}\n\thooksPath = /tmp\n")
    (git_dir / "HEAD").write_text("ref: refs/heads/main\n")
    with pytest.raises(ConfigError, match="may not contain .git"):
        repo_from_dir(load_task(task).repo_dir, tmp_path / "scratch")
    assert not marker.exists()
    with pytest.raises(ConfigError, match="may not contain .git"):
        copy_repo(load_task(task), tmp_path / "copy")


def test_a_link_in_the_tests_is_installed_as_a_link_and_removed_as_one(tmp_path: Path, host: Path) -> None:
    task = make_task(tmp_path)
    (task / "tests" / "conftest.py").symlink_to(host / "id_rsa")
    (task / "tests" / "fixtures").symlink_to(host)
    work = copy_repo(load_task(task), tmp_path / "w")
    installed = install_tests(load_task(task), work)
    assert (work / "tests" / "conftest.py").is_symlink() and (work / "tests" / "fixtures").is_symlink()
    assert not (work / "tests" / "id_rsa").exists()  # the host folder's files were not copied in
    remove_tests(installed)
    assert not (work / "tests").exists() and not (work / "tests").is_symlink()
    assert (host / "id_rsa").read_text() == SECRET


def test_a_task_may_name_a_preset_but_never_a_policy_file_of_its_own(tmp_path: Path) -> None:
    """A task's policy file could make every path writable: `run --task` and `eval` refuse it."""
    from loopmeter.tasks import task_policy
    from tests.conftest import loopmeter_cmd

    wide = tmp_path / "task-wide"
    task = make_task(wide, policy='"wide.yaml"')
    (task / "wide.yaml").write_text("name: wide\nfilesystem:\n  writable: ['/']\n")
    with pytest.raises(ConfigError, match="a task may only name a preset"):
        task_policy(load_task(task), "default")
    out = subprocess.run([*loopmeter_cmd("run", "--task", str(task), "--agent", "nop")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "a task may only name a preset" in out.stderr, out.stderr
    strict = make_task(tmp_path / "strict", policy='"strict"')
    assert task_policy(load_task(strict), "default") == "strict"
    assert task_policy(load_task(make_task(tmp_path / "none")), "default") == "default"
