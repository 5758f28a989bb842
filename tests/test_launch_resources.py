"""Resources validation and the MPI command lines (pure functions, no processes)."""

import pytest

from simai.launch import MpiLauncher, Resources, launch_argv
from simai.launch.mpi import detect_launcher, mpiexec_flavour
from simai.launch.resources import as_resources


def test_defaults_and_derived_nodes():
    r = Resources()
    assert (r.cpus, r.gpus, r.ranks, r.nodes) == (1, 0, 1, 1)
    r = Resources(ranks=8, ranks_per_node=4, cpus=2, gpus=1)
    assert r.nodes == 2
    assert (r.total_cpus, r.total_gpus) == (16, 8)
    assert r.per_node() == (8, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cpus": -1}, "cpus must be an int >= 0"),
        ({"gpus": -2}, "gpus must be an int >= 0"),
        ({"ranks": 0}, "ranks must be an int >= 1"),
        ({"ranks_per_node": 0}, "ranks_per_node must be an int >= 1"),
        ({"nodes": 3, "ranks": 2}, "every node needs at least one rank"),
        ({"nodes": 1, "ranks": 8, "ranks_per_node": 4}, "cannot place 8 ranks"),
    ],
)
def test_impossible_values_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Resources(**kwargs)


def test_non_integers_raise_type_error():
    with pytest.raises(TypeError, match="cpus must be an int"):
        Resources(cpus=1.5)
    with pytest.raises(TypeError, match="gpus must be an int"):
        Resources(gpus=True)


def test_as_resources():
    assert as_resources(None) == Resources()
    assert as_resources({"cpus": 2}) == Resources(cpus=2)
    assert as_resources(Resources(cpus=2), gpus=1) == Resources(cpus=2, gpus=1)
    assert as_resources(Resources(), ranks=8, ranks_per_node=4).nodes == 2
    with pytest.raises(TypeError, match="unknown resource field"):
        as_resources({"cores": 2})
    with pytest.raises(TypeError, match="Resources or a dict"):
        as_resources(3)


OMPI = MpiLauncher("openmpi", "/usr/bin/mpiexec")
MPICH = MpiLauncher("mpich", "/opt/mpich/bin/mpiexec")
SRUN = MpiLauncher("srun", "/usr/bin/srun", ("--mpi=pmix",))


def test_openmpi_lines():
    assert launch_argv(OMPI, ["prog", "-x"], 4) == ["/usr/bin/mpiexec", "-n", "4", "prog", "-x"]
    assert launch_argv(OMPI, ["prog"], 8, ranks_per_node=4, hosts=["a", "b"]) == [
        "/usr/bin/mpiexec",
        "-n",
        "8",
        "--map-by",
        "ppr:4:node",
        "--host",
        "a:4,b:4",
        "prog",
    ]
    assert launch_argv(OMPI, ["prog"], 2, cpus_per_rank=3)[3:5] == ["--map-by", "slot:PE=3"]
    assert "--host" in launch_argv(OMPI, ["prog"], 3, hosts=["a", "b"])
    assert "a:2,b:2" in launch_argv(OMPI, ["prog"], 3, hosts=["a", "b"])


def test_mpich_lines():
    assert launch_argv(MPICH, ["prog"], 8, ranks_per_node=4, hosts=["a", "b"]) == [
        "/opt/mpich/bin/mpiexec",
        "-n",
        "8",
        "-ppn",
        "4",
        "-hosts",
        "a,b",
        "prog",
    ]


def test_srun_lines():
    line = launch_argv(SRUN, ["prog"], 8, ranks_per_node=4, cpus_per_rank=2, gpus_per_rank=1)
    assert line == [
        "/usr/bin/srun",
        "--mpi=pmix",
        "-n",
        "8",
        "--ntasks-per-node=4",
        "--nodes=2",
        "--cpus-per-task=2",
        "--gpus-per-task=1",
        "prog",
    ]


def test_launch_argv_rejects_bad_input():
    with pytest.raises(ValueError, match="ranks must be an int >= 1"):
        launch_argv(OMPI, ["prog"], 0)
    with pytest.raises(ValueError, match="argv is empty"):
        launch_argv(OMPI, [], 2)
    with pytest.raises(ValueError, match="unknown MPI launcher flavour"):
        MpiLauncher("lam", "/usr/bin/lamexec")


def test_detect_launcher_uses_real_path():
    env = {"PATH": "/usr/bin:/bin"}
    launcher = detect_launcher(env)
    assert launcher.flavour == "openmpi"  # Open MPI is what this machine has
    assert mpiexec_flavour(launcher.executable) == "openmpi"
    in_slurm = detect_launcher({"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "7"})
    assert in_slurm.flavour == "srun" and in_slurm.extra_args == ("--mpi=pmix",)
    chosen = detect_launcher({"PATH": "/usr/bin:/bin", "SIMAI_MPI_LAUNCHER": "mpirun"})
    assert chosen.flavour == "openmpi" and chosen.executable.endswith("mpirun")
    with pytest.raises(FileNotFoundError, match="no MPI launcher found"):
        detect_launcher({"PATH": "/nonexistent"})
    with pytest.raises(FileNotFoundError, match="SIMAI_MPI_LAUNCHER"):
        detect_launcher({"PATH": "/usr/bin", "SIMAI_MPI_LAUNCHER": "nope-mpiexec"})
