# Sourced by the device scripts of the CPU scaling results (docs/results/scaling/*/device.sh), from
# the repository root on a device machine with .device/carry carried: unpacks the bundled OpenMPI
# (mpi.tar.xz), sets what mpirun needs there (root, shared-memory transport with CMA), records the
# CPU and load in $O, and unpacks hyperattn-old.xz / hyperattn-new.xz to /tmp/ho and /tmp/hn.
O=${OUT:-/tmp/out}; mkdir -p "$O"
mkdir -p /tmp/mpib && tar -C /tmp/mpib -xJf .device/carry/mpi.tar.xz; M=/tmp/mpib/mpi
export OPAL_PREFIX=$M PATH=$M/bin:$PATH LD_LIBRARY_PATH=$M/lib
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1
export PMIX_MCA_pcompress_base_silence_warning=1 OMPI_MCA_btl_vader_single_copy_mechanism=cma
{ grep -m1 'model name' /proc/cpuinfo; nproc; } > "$O/cpu.txt"; uptime > "$O/uptime-before.txt"; cat "$O/cpu.txt"
xz -dc .device/carry/hyperattn-old.xz > /tmp/ho; xz -dc .device/carry/hyperattn-new.xz > /tmp/hn; chmod +x /tmp/ho /tmp/hn
