"""Other tools' formats: NVIDIA mig-parted's config files, Slurm's gres.conf and prolog, Kubernetes' resources."""
