"""First-seen opens decided natively against the Python path: same answers and facts.

Enforcing, the native path computes the ``file_open`` coefficient of a read-only open
of a plain file it has no recorded decision for and answers it when the point is in
the sealed model. Each workload here opens many files once each (a generated tree
and /etc files), is learned with the Python path, then enforced twice: with the
compiled ``_decide`` (``SEMTRUST_NATIVE=1``) and without (``=0``). Output, model,
point counts, forensics and faults must be the same, and the native run must have
answered the first-seen opens itself (else the comparison proves nothing). The
adversarial cases give the native path objects it must leave to Python: content
changed since learning, a pseudonym path, files under a directory the domain made,
and a task identity the model does not have for those files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from semtrust.model.merge import merge_models
from semtrust.model.modelfile import load_model
from semtrust.orchestrator import native
from tests.integration.needs import need
from tests.integration.test_native_decisions import C_PRELUDE, Run, both

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")

FILES = 200

WORKLOAD = C_PRELUDE + r"""
#ifndef VARIANT
#define VARIANT 1
#endif

/* argv: mode tree-dir count [other-binary] */
int main(int argc, char **argv) {
    const char *mode = argv[1], *dir = argv[2];
    int count = atoi(argv[3]);
    char p[4096];
    printf("variant %d\n", VARIANT);
    try_open(AT_FDCWD, "/etc/hostname", O_RDONLY);
    try_open(AT_FDCWD, "/etc/passwd", O_RDONLY | O_CLOEXEC);
    try_open(AT_FDCWD, "/etc/group", O_RDONLY);
    try_open(AT_FDCWD, "/etc", O_RDONLY | O_DIRECTORY);
    try_open(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY);
    int d = open(dir, O_PATH | O_DIRECTORY);
    for (int i = 0; i < count; i++) {
        snprintf(p, sizeof(p), "f%03d", i);
        try_open(d, p, O_RDONLY);                      /* relative to a dirfd */
    }
    if (strcmp(mode, "made") == 0) {
        /* A directory the domain makes (unless it is there), a file made in it, a file
         * moved in; then both opened read-only. */
        char q[4096];
        snprintf(p, sizeof(p), "%s/made", dir);
        printf("mkdir %d\n", mkdir(p, 0755) == 0 ? 0 : errno);
        snprintf(p, sizeof(p), "%s/made/x", dir);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { if (write(fd, "made\n", 5) != 5) return 1; close(fd); }
        try_open(AT_FDCWD, p, O_RDONLY);
        snprintf(p, sizeof(p), "%s/f199", dir);
        snprintf(q, sizeof(q), "%s/made/old", dir);
        printf("rename %d\n", rename(p, q) == 0 ? 0 : errno);
        try_open(AT_FDCWD, q, O_RDONLY);
    }
    if (strcmp(mode, "child") == 0 && argc > 4) {
        /* Another program (another task identity) opens the same tree. */
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            char *args[] = {argv[4], "tree", (char *)dir, argv[5], NULL};
            execv(argv[4], args);
            _exit(127);
        }
        int status;
        waitpid(pid, &status, 0);
        printf("child %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    fflush(stdout);
    return 0;
}
"""


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    gcc = shutil.which("gcc")
    need(gcc is not None, "gcc not installed (Debian package gcc)")
    assert gcc is not None
    d = tmp_path_factory.mktemp("firstseen")
    src = d / "w.c"
    src.write_text(WORKLOAD)
    one, two = d / "w1", d / "w2"
    subprocess.run([gcc, "-O1", "-o", str(one), str(src)], check=True)
    subprocess.run([gcc, "-O1", "-DVARIANT=2", "-o", str(two), str(src)], check=True)
    return one, two


@pytest.fixture(autouse=True)
def _built() -> None:
    need(native._FastPath is not None,
         "the native decision path is not built (pip install -e . builds _decide)")
    need(os.geteuid() == 0, "the differential runs use root's credentials throughout")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "tree"
    t.mkdir()
    for i in range(FILES):
        (t / f"f{i:03d}").write_text(f"file {i}\n" * (1 + i % 7))
    return t


def _learn(cmd: list[str], tmp: Path, **opts: object) -> Path:
    model = tmp / "model"
    r = Run(cmd, tmp, False, output=str(model), **opts)
    assert r.code == 0, r.stdout
    return model


def test_first_seen_opens_are_answered_natively(programs: tuple[Path, Path], tree: Path,
                                                tmp_path: Path) -> None:
    """Every file opened once: the points are computed natively, the facts equal."""
    cmd = [str(programs[0]), "tree", str(tree), str(FILES)]
    model = _learn(cmd, tmp_path)
    on, off = both(cmd, tmp_path, model=str(model), enforce=True)
    assert on.code == 0, on.stdout
    assert ":err" not in on.stdout, on.stdout
    # Only the opens before the thread was first registered (the loader's, the first
    # /etc file) are Python's: every tree file is first-seen and answered natively.
    assert on.d.native_decisions >= FILES, on.d.native_decisions
    assert off.d.native_decisions == 0
    assert on.facts() == off.facts()
    assert not on.d.tma.forensics


def test_changed_content_is_denied_with_the_same_forensics(
        programs: tuple[Path, Path], tree: Path, tmp_path: Path) -> None:
    """A file rewritten after learning (same path and size): its point is not in the
    model, so both paths deny it, record the same forensic event and refuse the
    untrusted process's later opens."""
    cmd = [str(programs[0]), "tree", str(tree), str(FILES)]
    model = _learn(cmd, tmp_path)
    victim = tree / "f100"
    old = victim.read_bytes()
    victim.write_bytes(old.replace(b"file", b"EVIL"))
    on, off = both(cmd, tmp_path, model=str(model), enforce=True)
    assert "f099:0:ok" in on.stdout and "f100:0:err1\n" in on.stdout, on.stdout
    assert on.stdout.count(":err1\n") == FILES - 100, on.stdout
    assert on.d.native_decisions >= 100, on.d.native_decisions
    assert on.facts() == off.facts()
    assert len(on.d.tma.forensics) == 1


def test_pseudonym_path_is_left_to_python(programs: tuple[Path, Path], tree: Path,
                                          tmp_path: Path) -> None:
    """A pseudonym's content is not hashed: learned without the pseudonym, the file's
    point (its content digest) is in the model, yet with the pseudonym loaded the open
    is another point -- denied on both paths, never allowed from the content."""
    cmd = [str(programs[0]), "tree", str(tree), str(FILES)]
    model = _learn(cmd, tmp_path)
    pseudo = [str(tree / "f150")]
    on, off = both(cmd, tmp_path, model=str(model), enforce=True, pseudonyms=pseudo)
    assert "f149:0:ok" in on.stdout and "f150:0:err1\n" in on.stdout, on.stdout
    assert on.d.native_decisions >= 150, on.d.native_decisions
    assert on.facts() == off.facts()
    assert len(on.d.tma.forensics) == 1


def test_files_under_a_directory_the_domain_made(programs: tuple[Path, Path], tree: Path,
                                                 tmp_path: Path) -> None:
    """Objects made by the domain, or found under a directory it made, are described
    relative to the creation. The model also holds their plain descriptions (learned
    when the same directory and file were there before the run): a native path that
    described them plainly would answer from those points, and the counts would differ."""
    cmd = [str(programs[0]), "made", str(tree), str(FILES)]
    made = tree / "made"
    content = (tree / "f199").read_bytes()

    def reset(premade: bool) -> None:
        shutil.rmtree(made, ignore_errors=True)
        (tree / "f199").write_bytes(content)
        if premade:
            made.mkdir()
            (made / "x").write_text("made\n")
            os.chmod(made / "x", 0o644)

    models = []
    for premade in (True, False):
        reset(premade)
        out = tmp_path / f"model-{premade}"
        r = Run(cmd, tmp_path, False, output=str(out))
        assert r.code == 0, r.stdout
        models.append(load_model(str(out)))
    model = tmp_path / "merged"
    model.write_text(merge_models(models).render())
    runs = []
    for native_on in (True, False):
        reset(False)
        runs.append(Run(cmd, tmp_path, native_on, model=str(model), enforce=True))
    on, off = runs
    assert "mkdir 0\n" in on.stdout and "rename 0\n" in on.stdout, on.stdout
    assert ":err" not in on.stdout, on.stdout
    assert on.d.native_decisions >= FILES, on.d.native_decisions
    assert on.facts() == off.facts()
    assert not on.d.tma.forensics


def test_another_task_identity_is_not_in_the_model(programs: tuple[Path, Path], tree: Path,
                                                   tmp_path: Path) -> None:
    """A second program's opens of the tree: learned for 10 files, enforced for 20.
    The 11th is a point of a task identity the model has only for the first program:
    denied on both paths, with the same forensics (then the process is untrusted)."""
    one, two = programs
    model = _learn([str(one), "child", str(tree), str(FILES), str(two), "10"], tmp_path)
    cmd = [str(one), "child", str(tree), str(FILES), str(two), "20"]
    on, off = both(cmd, tmp_path, model=str(model), enforce=True)
    assert "variant 2\n" in on.stdout, on.stdout
    assert on.stdout.count(":err1\n") == 10, on.stdout
    assert "f009:0:ok" in on.stdout.partition("variant 2")[2], on.stdout
    assert on.d.native_decisions >= FILES + 9, on.d.native_decisions
    assert on.facts() == off.facts()
    assert len(on.d.tma.forensics) == 1
