#!/bin/sh
# Step `merge`, one task (key []): a gather over every region's `joint`. Concatenates the
# regions' call sets, in the order of regions.txt, into anamo-out/merged.vcf and writes a
# one-line summary to anamo-out/summary.txt.
set -eu
list="$ANAMO_UPSTREAM_JOINT"
regions="$(dirname "$0")/../regions.txt"
out=anamo-out/merged.vcf
: > "$out.tmp"
grep -v '^#' "$regions" | while read -r region; do
  [ -n "$region" ] || continue
  grep -qx "$region" "$list" || { echo "joint/$region is not among the upstream tasks" >&2; exit 1; }
  vcf="anamo-out/joint/$region.vcf"
  [ -s "$vcf" ] || { echo "missing input $vcf" >&2; exit 1; }
  cat "$vcf" >> "$out.tmp"
done
mv "$out.tmp" "$out"
regions_n=$(grep -c '^#region' "$out")
genotypes=$(grep -vc '^#' "$out")
samples=$(grep -v '^#' "$out" | cut -f2 | sort -u | wc -l | tr -d ' ')
printf 'regions\t%s\tsamples\t%s\tgenotypes\t%s\n' "$regions_n" "$samples" "$genotypes" > anamo-out/summary.txt
