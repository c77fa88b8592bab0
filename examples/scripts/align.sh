#!/bin/sh
# Step `align`, one task per sample (key [sample]): stands in for aligning the sample's reads.
# Writes anamo-out/align/SAMPLE.bam (a small text file here). Like every script a task runs,
# it writes to a temporary name and renames, so a second run of the same task is harmless.
set -eu
sample="$ANAMO_KEY_SAMPLE"
mkdir -p anamo-out/align
sleep 0.3
reads=$(printf '%s' "$sample" | cksum | cut -d' ' -f1)
printf 'sample\t%s\nreads\t%s\n' "$sample" "$reads" > "anamo-out/align/$sample.bam.tmp"
mv "anamo-out/align/$sample.bam.tmp" "anamo-out/align/$sample.bam"
