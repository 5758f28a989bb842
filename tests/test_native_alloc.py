"""simai_get_alloc (a value in a buffer libsimai allocates) and the checksum helper thread.

A probe compiled here reads what Python put into buffers of simai_get_alloc, on every backend:
every dtype and shape, empty values, JSON (followed by a NUL) and large arrays (2 MiB aligned,
as huge pages need); damaged values are an error and no data; buffers are freed (the probe run
under AddressSanitizer's leak check, where it works, and a loop whose memory must not grow).
Large copies hash on libsimai's helper thread: values C writes that way read back in Python
(the checksum is the wire format's), threads copy at once, and a process forked while its
helper is busy for another thread puts and gets large values with a helper of its own. Large
puts stream past the cache: that copy gives memcpy's bytes at every alignment and length.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _native import DTYPES, JSON, NATIVE, SHAPES, _fixture, _pattern, _run
from test_native_clients import _damage

import simai
from simai.store import CorruptValueError

MIB = 1 << 20
HUGE = 2 * MIB
# around the helper's threshold and the huge-page size, and well above both
LARGE = [MIB - 64, MIB, HUGE, 3 * MIB + 8, 16 * MIB]
BEYOND = 40 * MIB  # over 32 MiB: whole huge pages, 2 MiB aligned

PROBE = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <simai.h>

#define MIB (1u << 20)

/* value `seed` of n bytes, as tests/_native.py's _pattern makes it */
static void pattern(uint8_t *b, size_t n, unsigned seed)
{
    for (size_t k = 0; k < n; k++)
        b[k] = (uint8_t)(k * 131 + seed * 7 + 1);
}

static int threads_now(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* put a |u1 array of n pattern bytes under key, read it back with simai_get_alloc, compare */
static int put_get(simai_store *s, const char *key, size_t n, unsigned seed)
{
    uint8_t *src = malloc(n);
    void *back = NULL;
    uint64_t shape = n;
    simai_info info;
    int rc;
    if (!src)
        return SIMAI_ERR_NOMEM;
    pattern(src, n, seed);
    if (!(rc = simai_put_array(s, key, SIMAI_DTYPE_U8, 1, &shape, src, 0)) &&
        !(rc = simai_get_alloc(s, key, &back, &info)) &&
        (info.nbytes != n || memcmp(back, src, n))) {
        fprintf(stderr, "%s: read back other bytes\n", key);
        rc = -1;
    }
    simai_free(back);
    free(src);
    return rc;
}

struct churn {
    simai_store *s; /* the main thread's handle: a fork never meets this thread opening one */
    _Atomic int stop;
    int rc, rounds;
};

/* another thread's large puts and gets, back to back, until told to stop */
static void *churn_main(void *arg)
{
    struct churn *c = arg;
    char key[64];
    while (!c->stop && !c->rc) {
        snprintf(key, sizeof key, "churn/%d", c->rounds % 4);
        c->rc = put_get(c->s, key, 4 * MIB + 3 * (size_t)c->rounds, (unsigned)c->rounds);
        c->rounds++;
    }
    return NULL;
}

struct worker {
    const char *url;
    int id, iters, rc;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    simai_store *s;
    char key[64];
    if ((w->rc = simai_open_url(w->url, &s)))
        return NULL;
    for (int i = 0; i < w->iters && !w->rc; i++) {
        size_t n = (size_t)(1 + (w->id + i) % 4) * MIB + (size_t)w->id * 8;
        snprintf(key, sizeof key, "threads/%d", w->id);
        w->rc = put_get(s, key, n, (unsigned)(100 + w->id));
    }
    simai_close(s);
    return NULL;
}

int main(int argc, char **argv)
{
    simai_store *s;
    int rc = simai_open_url(argv[2], &s);
    if (!rc && !strcmp(argv[1], "get")) { /* get URL DIR KEY...: each payload to DIR/I */
        for (int i = 4; i < argc; i++) {
            void *data = (void *)1;
            simai_info info;
            int r = simai_get_alloc(s, argv[i], &data, &info);
            if (r) {
                int zeros = info.kind == 0 && info.nbytes == 0 && !info.dtype[0];
                printf("%s %s|%d %d\n", simai_code_name(r), simai_last_error(), data == NULL,
                       zeros);
                continue;
            }
            uintptr_t align = info.nbytes > 32 * MIB ? 2 * MIB : 16;
            char path[4096];
            snprintf(path, sizeof path, "%s/%d", argv[3], i - 4);
            FILE *f = fopen(path, "wb");
            if (!f || fwrite(data, 1, info.nbytes, f) != info.nbytes || fclose(f)) {
                printf("cannot write %s\n", path);
                return 1;
            }
            printf("ok %d %d %s %" PRIu64 " %d %d|", info.kind, info.ndim, info.dtype,
                   info.nbytes, (uintptr_t)data % align == 0,
                   info.kind == SIMAI_KIND_JSON ? ((char *)data)[info.nbytes] == 0 : 1);
            for (int d = 0; d < info.ndim; d++)
                printf(" %" PRIu64, info.shape[d]);
            printf("\n");
            simai_free(data);
        }
    } else if (!rc && !strcmp(argv[1], "loop")) { /* loop URL KEY N: get and free N times */
        int n = atoi(argv[4]);
        long first = 0; /* page faults after the first get */
        struct rusage ru;
        for (int i = 0; i < n && !rc; i++) {
            void *data;
            if (!(rc = simai_get_alloc(s, argv[3], &data, NULL)))
                simai_free(data);
            getrusage(RUSAGE_SELF, &ru);
            if (i == 0)
                first = ru.ru_minflt;
        }
        if (!rc)
            printf("maxrss_kib %ld later_faults %ld\n", ru.ru_maxrss, ru.ru_minflt - first);
    } else if (!rc && !strcmp(argv[1], "put")) { /* put URL PREFIX SIZE...: pattern arrays */
        for (int i = 4; i < argc && !rc; i++) {
            char key[256];
            snprintf(key, sizeof key, "%s/%s", argv[3], argv[i]);
            rc = put_get(s, key, strtoull(argv[i], NULL, 10), (unsigned)(i - 4));
        }
        if (!rc)
            printf("threads %d\n", threads_now());
    } else if (!rc && !strcmp(argv[1], "threads")) { /* threads URL N ITERS */
        int n = atoi(argv[3]);
        pthread_t t[16];
        struct worker w[16];
        for (int i = 0; i < n; i++) {
            w[i] = (struct worker){argv[2], i, atoi(argv[4]), 0};
            pthread_create(&t[i], NULL, worker_main, &w[i]);
        }
        for (int i = 0; i < n; i++) {
            pthread_join(t[i], NULL);
            rc = rc ? rc : w[i].rc;
        }
        if (!rc)
            printf("threads ok\n");
    } else if (!rc && !strcmp(argv[1], "fork")) { /* fork URL N: children beside a busy helper */
        struct churn c = {s, 0, 0, 0};
        pthread_t t;
        int forks = atoi(argv[3]), ok = 0, children_threads = 0;
        if ((rc = put_get(s, "fork/first", 8 * MIB, 1)))
            goto out; /* the helper runs now */
        printf("parent threads %d\n", threads_now());
        pthread_create(&t, NULL, churn_main, &c);
        for (int i = 0; i < forks; i++) {
            int status;
            usleep(2000 + 500 * i); /* at other points of the other thread's copies */
            pid_t pid = fork();
            if (pid == 0) { /* a helper of its own, or a hang the alarm ends */
                simai_store *mine;
                char key[64];
                int r;
                alarm(30);
                if (!(r = simai_open_url(argv[2], &mine))) {
                    snprintf(key, sizeof key, "fork/%d/a", i);
                    r = put_get(mine, key, 4 * MIB, (unsigned)(10 + i));
                    snprintf(key, sizeof key, "fork/%d/b", i);
                    r = r ? r : put_get(mine, key, 16 * MIB + 8, (unsigned)(20 + i));
                    simai_close(mine);
                }
                if (r > 0)
                    fprintf(stderr, "child %d: %s %s\n", i, simai_code_name(r),
                            simai_last_error());
                _exit(r ? 1 : 10 + (threads_now() > 9 ? 9 : threads_now()));
            }
            if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
                WEXITSTATUS(status) < 10) {
                fprintf(stderr, "child %d failed: status %d\n", i, status);
                break;
            }
            ok++;
            children_threads = WEXITSTATUS(status) - 10;
        }
        c.stop = 1;
        pthread_join(t, NULL);
        rc = c.rc;
        if (!rc)
            printf("forks ok %d of %d, child threads %d, other thread's rounds %d\n", ok, forks,
                   children_threads, c.rounds);
    }
out:
    if (rc > 0)
        printf("%s %s\n", simai_code_name(rc), simai_last_error());
    else if (rc < 0)
        printf("wrong data\n");
    simai_close(s);
    return 0;
}
"""

# a program that leaks: whether LeakSanitizer reports leaks here
LEAK = "#include <stdlib.h>\nvoid *p;\nint main(void) { p = malloc(7); p = 0; return 0; }\n"

CPP = r"""
#include <cstdio>
#include <cstring>
#include <simai.hpp>

// cpp URL: simai::buffer reads the arrays the test put, and owns and frees them
int main(int, char **argv)
{
    simai::store s(argv[1]);
    simai::buffer b = s.get_alloc("cpp/f8");
    std::printf("%zu %zu", b.size<double>(), b.shape().size());
    for (std::size_t i = 0; i < b.size<double>(); i += b.size<double>() / 4)
        std::printf(" %g", b.data<double>()[i]);
    try {
        b.data<float>();
    } catch (const simai::error &e) {
        std::printf(" | %d", e.code());
    }
    simai::buffer moved = std::move(b);
    void *raw = moved.release();
    simai_free(raw);
    std::printf(" | %s\n", static_cast<const char *>(s.get_alloc("cpp/json").bytes()));
    return 0;
}
"""


def _compile(native, tmp_path_factory, source: str, name: str, *flags: str) -> Path:
    src = tmp_path_factory.mktemp("probe") / name
    src.write_text(source)
    exe = src.with_suffix("")
    prefix = native.prefix
    cc = native.cc if name.endswith(".c") else (shutil.which("c++") or shutil.which("g++"))
    if cc is None:
        pytest.skip("no C++ compiler")
    std = "-std=c11" if name.endswith(".c") else "-std=c++17"
    _run(cc, std, "-Wall", "-Wextra", *flags, src, "-o", exe, f"-I{prefix}/include",
         f"-L{prefix}/lib", "-lsimai", "-lpthread", f"-Wl,-rpath,{prefix}/lib")  # fmt: skip
    return exe


@pytest.fixture(scope="module")
def probe(native, tmp_path_factory) -> Path:
    return _compile(native, tmp_path_factory, PROBE, "probe.c")


@pytest.fixture(scope="module")
def asan_probe(native, tmp_path_factory) -> Path:
    """The probe under AddressSanitizer, when its leak check works here (it needs ptrace)."""
    try:
        exe = _compile(native, tmp_path_factory, PROBE, "asan.c", "-fsanitize=address", "-g")
        leak = _compile(native, tmp_path_factory, LEAK, "leak.c", "-fsanitize=address")
    except AssertionError as e:
        pytest.skip(f"no AddressSanitizer here: {e}")
    done = subprocess.run([leak], capture_output=True, text=True)
    if "LeakSanitizer" not in done.stderr or "detected memory leaks" not in done.stderr:
        pytest.skip(f"LeakSanitizer does not work here: {done.stderr.strip()[-200:]}")
    return exe


@pytest.fixture
def store(store_url):
    s = simai.open_store(store_url)
    yield s
    s.close()


def _get(probe: Path, url: str, keys: list[str], out: Path) -> list[tuple[str, bytes | None]]:
    """What simai_get_alloc gave for each key: its description line, and its payload."""
    out.mkdir(exist_ok=True)
    lines = _run(probe, "get", url, out, *keys).splitlines()
    assert len(lines) == len(keys), lines
    return [
        (ln, (out / str(i)).read_bytes() if ln.startswith("ok ") else None)
        for i, ln in enumerate(lines)
    ]


def _expect(a: np.ndarray) -> str:
    """The probe's line for array `a`: kind, ndim, dtype, nbytes, aligned, (no NUL)| shape."""
    return f"ok 1 {a.ndim} {a.dtype.str} {a.nbytes} 1 1|" + "".join(f" {n}" for n in a.shape)


# --- simai_get_alloc: what Python put, on every backend ----------------------------------------


def test_get_alloc_reads_what_python_put(probe, store, tmp_path) -> None:
    """Every dtype and shape (empty ones too), bytes (empty too), JSON with its NUL, and large
    arrays come back equal, aligned as malloc aligns, and those over 32 MiB 2 MiB aligned."""
    values: dict[str, object] = {}
    for d, dt in enumerate(DTYPES):
        for i in range(len(SHAPES)):
            values[f"arr/{dt}/{i}"] = _fixture(d, i)
    values["bytes/empty"] = b""
    values["bytes/some"] = _pattern(100_000, 3).tobytes()
    values["json"] = JSON
    for n in LARGE:
        values[f"large/{n}"] = _pattern(n, n % 251)
    values["large/f8"] = np.linspace(0, 1, 5 * MIB // 8).reshape(-1, 5)
    values["beyond"] = _pattern(BEYOND, 9)
    for key, v in values.items():
        store.put(key, v)
    got = _get(probe, store.url, list(values), tmp_path / "out")
    for (key, v), (line, data) in zip(values.items(), got, strict=True):
        if isinstance(v, np.ndarray):
            a = v
            assert line == _expect(a), key
            assert data == a.tobytes(), key
        elif isinstance(v, bytes):
            assert line == f"ok 0 0  {len(v)} 1 1|", key
            assert data == v, key
        else:  # JSON, followed by a NUL in its buffer (the last 1)
            assert line == f"ok 2 0  {len(data)} 1 1|", line
            assert json.loads(data) == v


def test_get_alloc_of_missing_and_damaged_values_is_an_error_and_no_data(
    probe, store, tmp_path
) -> None:
    """A missing key is SIMAI_ERR_NOT_FOUND, a flipped bit in a small or large payload or in
    a header SIMAI_ERR_CORRUPT: *data is NULL and the info all zeros where no header was read."""
    for n in (100, 300_000):
        store.put(f"x{n}", np.arange(n, dtype=np.float64))
        store.put(f"h{n}", np.arange(n, dtype=np.float64))
        _damage(store, f"x{n}", 64 + 8 * (n - 1))
        _damage(store, f"h{n}", 24)  # the shape
        with pytest.raises(CorruptValueError):
            store.get(f"x{n}")
    keys = ["missing", "x100", "x300000", "h100", "h300000"]
    got = [ln for ln, _ in _get(probe, store.url, keys, tmp_path / "out")]
    assert got[0].startswith("SIMAI_ERR_NOT_FOUND key 'missing' not found") and got[0].endswith(
        "|1 1"
    )
    for line in got[1:3]:  # the header was read: info describes the value, data is NULL
        assert line.startswith("SIMAI_ERR_CORRUPT key 'x") and "checksum" in line, line
        assert line.endswith("|1 0"), line
    for line in got[3:]:
        assert line.startswith("SIMAI_ERR_CORRUPT") and line.endswith("|1 1"), line


# --- freeing -----------------------------------------------------------------------------------


def test_get_alloc_buffers_are_freed(probe, asan_probe, local_store_url, tmp_path) -> None:
    """Under AddressSanitizer, reading every kind of value (and failing to) leaks nothing and
    touches nothing outside its buffer; getting and freeing a large value 100 times keeps the
    memory of about one."""
    s = simai.open_store(local_store_url)
    s.put("big", _pattern(8 * MIB, 5))
    s.put("beyond", _pattern(BEYOND, 4))
    s.put("small", _pattern(1000, 6))
    s.put("json", JSON)
    s.put("empty", b"")
    s.put("bad", np.arange(50_000, dtype=np.float64))
    _damage(s, "bad", 64 + 8)
    out = tmp_path / "out"
    out.mkdir()
    keys = ["big", "beyond", "small", "json", "empty", "bad", "no"]
    done = subprocess.run(
        [asan_probe, "get", local_store_url, out, *keys],
        capture_output=True,
        text=True,
        env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1:exitcode=23"},
    )
    assert done.returncode == 0, done.stderr
    assert "LeakSanitizer" not in done.stderr and "AddressSanitizer" not in done.stderr
    assert [ln.split()[0] for ln in done.stdout.splitlines()] == ["ok"] * 5 + [
        "SIMAI_ERR_CORRUPT",
        "SIMAI_ERR_NOT_FOUND",
    ]
    for key in ("big", "beyond"):
        one = int(_run(probe, "loop", local_store_url, key, "1").split()[1])
        many = int(_run(probe, "loop", local_store_url, key, "100").split()[1])
        assert many < one + 64 * 1024, (key, one, many)  # 100 leaked buffers: 0.8 or 4 GB
    s.close()


def test_a_loop_that_reads_and_frees_a_large_value_maps_memory_once(probe, local_store_url):
    """simai_free keeps the last buffer over 32 MiB for the next simai_get_alloc it can serve,
    as malloc keeps smaller ones: getting and freeing a value takes the page faults of new
    memory in its first rounds only (a new 40 MiB buffer takes 20 to 10,240), so 40 more
    rounds take almost none; a value of another size is served the same way."""
    s = simai.open_store(local_store_url)
    s.put("big", _pattern(8 * MIB, 5))
    s.put("beyond", _pattern(BEYOND, 4))
    s.put("more", _pattern(BEYOND + 3 * HUGE, 3))
    s.close()
    for key in ("big", "beyond", "more"):
        faults = []
        for rounds in ("10", "50"):
            out = _run(probe, "loop", local_store_url, key, rounds).split()
            assert out[2] == "later_faults", out
            faults.append(int(out[3]))
        assert faults[1] - faults[0] < 40, (key, faults)


# --- the helper thread -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "file"])
def test_large_values_c_hashes_on_its_helper_read_in_python(
    probe, backend, request, tmp_path
) -> None:
    """Values C puts at and above the helper's threshold carry the wire format's checksum:
    Python reads them (verifying it) equal, and C reads them back."""
    url = request.getfixturevalue(f"{backend}_store_url")
    sizes = [str(n) for n in LARGE]
    out = _run(probe, "put", url, "c", *sizes)
    assert out.startswith("threads"), out
    if len(os.sched_getaffinity(0)) > 1:
        assert out == "threads 2\n"  # this one and the helper
    s = simai.open_store(url)
    for i, n in enumerate(LARGE):
        assert np.array_equal(s.get(f"c/{n}"), _pattern(n, i)), n
    s.close()


def test_one_cpu_hashes_without_the_helper(probe, local_store_url) -> None:
    """A process that may run on one CPU starts no helper (two threads would take turns) and
    hashes as it copies: the values are the same."""
    cpu = min(os.sched_getaffinity(0))
    done = subprocess.run(
        [probe, "put", local_store_url, "one", *(str(n) for n in LARGE)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    assert done.stdout == "threads 1\n", done.stdout + done.stderr
    s = simai.open_store(local_store_url)
    for i, n in enumerate(LARGE):
        assert np.array_equal(s.get(f"one/{n}"), _pattern(n, i)), n
    s.close()


def test_threads_copy_large_values_at_once(probe, local_store_url) -> None:
    """Four threads of one process put and read large values at once, one of them at a time
    on the helper and the others on their own: every value is read back equal, and Python
    reads the last ones."""
    assert _run(probe, "threads", local_store_url, "4", "12", timeout=120) == "threads ok\n"
    s = simai.open_store(local_store_url)
    for w in range(4):
        n = (1 + (w + 11) % 4) * MIB + w * 8
        assert np.array_equal(s.get(f"threads/{w}"), _pattern(n, 100 + w)), w
    s.close()


def test_fork_while_the_helper_works_for_another_thread(probe, local_store_url) -> None:
    """A process whose helper runs, busy with another thread's copies, forks: each child
    (which has no helper) puts and reads large values, with a helper of its own where there
    are two CPUs, and never hangs; the parent's other thread goes on unharmed."""
    out = _run(probe, "fork", local_store_url, "12", timeout=240)
    lines = out.splitlines()
    two = len(os.sched_getaffinity(0)) > 1
    assert lines[0] == f"parent threads {2 if two else 1}", out
    assert lines[1].startswith(f"forks ok 12 of 12, child threads {2 if two else 1}, "), out
    assert int(lines[1].rsplit(" ", 1)[1]) > 0, out
    s = simai.open_store(local_store_url)
    for i in range(12):
        assert np.array_equal(s.get(f"fork/{i}/a"), _pattern(4 * MIB, 10 + i))
        assert np.array_equal(s.get(f"fork/{i}/b"), _pattern(16 * MIB + 8, 20 + i))
    s.close()


STREAMING = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "copy.h"

int main(void)
{
    enum { MOST = 4096 + 200 };
    unsigned char *src = malloc(MOST + 64), *dst = malloc(MOST + 64), *want = malloc(MOST + 64);
    int checked = 0;
    for (size_t n = 0; n <= MOST; n += n < 300 ? 1 : 997)
        for (int so = 0; so < 17; so++)
            for (int d = 0; d < 17; d++) {
                for (size_t k = 0; k < MOST + 64; k++) {
                    src[k] = (unsigned char)(k * 131 + so + 1);
                    dst[k] = want[k] = (unsigned char)(k * 7 + d);
                }
                memcpy(want + d, src + so, n);
                simai_copy_streaming(dst + d, src + so, n);
                if (memcmp(dst, want, MOST + 64)) {
                    printf("differs: n %zu, source offset %d, destination offset %d\n", n, so, d);
                    return 1;
                }
                checked++;
            }
    printf("ok %d\n", checked);
    return 0;
}
"""


def test_streaming_copy_is_memcpy_at_every_alignment(native, tmp_path_factory) -> None:
    """The copy that large puts use (non-temporal stores from the first 16-byte aligned
    destination byte, plain copies before and after) writes memcpy's bytes and nothing beside
    them, for every length up to 300 bytes and some beyond, at 17 offsets of either side."""
    exe = _compile(native, tmp_path_factory, STREAMING, "streaming.c", f"-I{NATIVE / 'src'}")
    out = _run(exe)
    assert out.startswith("ok ") and int(out.split()[1]) > 300 * 17 * 17, out


# --- C++ ---------------------------------------------------------------------------------------


def test_cpp_buffer_owns_what_get_alloc_read(native, tmp_path_factory, local_store_url) -> None:
    """simai::store::get_alloc gives a simai::buffer: typed access that checks the dtype, a
    move, release() to simai_free, and a JSON text with its NUL."""
    exe = _compile(native, tmp_path_factory, CPP, "buffer.cpp")
    s = simai.open_store(local_store_url)
    s.put("cpp/f8", np.arange(4 * MIB // 8, dtype=np.float64).reshape(-1, 8))
    s.put("cpp/json", {"a": 1})
    s.close()
    n = 4 * MIB // 8
    want = f"{n} 2 0 {n // 4} {n // 2} {3 * n // 4} | 5 | " + '{"a": 1}\n'
    assert _run(exe, local_store_url) == want
