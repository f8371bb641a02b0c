"""Running planned jobs on Cloud TPU VMs."""
