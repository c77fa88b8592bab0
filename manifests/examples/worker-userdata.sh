#!/bin/bash
# User-data template for the genomics EC2 fleets (spec.provider.ec2.userData).
#
# The EC2 provider fills in the {{...}} placeholders when it launches an instance:
#   {{cluster}}  controller name      {{fleet}}  fleet name      {{step}}  step name
#   {{store}}    task store URL       {{region}} AWS region      {{worker_args}} spec.workerArgs
# The AMI from the launch template already has `anamo` in /usr/local/bin.
set -euo pipefail

# Local NVMe as scratch space for BAMs and VCFs.
if [ -b /dev/nvme1n1 ]; then
  mkfs.xfs -f /dev/nvme1n1
  mkdir -p /scratch
  mount /dev/nvme1n1 /scratch
fi

export AWS_REGION='{{region}}'
# The worker registers with the store, claims tasks of its step, and exits after being idle;
# the instance then shuts down (the launch template sets shutdown behaviour to terminate).
cd /scratch
/usr/local/bin/anamo worker --store '{{store}}' --step '{{step}}' {{worker_args}} || true
shutdown -h now
