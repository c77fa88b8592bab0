#!/bin/sh
# Step `joint`, one task per region (key [region]): a gather over every sample's `call` of that
# region. anamo lists those tasks' ids (SAMPLE/REGION, one per line) in the file named by
# $ANAMO_UPSTREAM_CALL, so a sample that arrived late is included. Writes
# anamo-out/joint/REGION.vcf: a header and every sample's genotype line, sorted.
set -eu
region="$ANAMO_KEY_REGION"
list="$ANAMO_UPSTREAM_CALL"
[ -s "$list" ] || { echo "no upstream calls listed in $list" >&2; exit 1; }
mkdir -p anamo-out/joint
out="anamo-out/joint/$region.vcf"
n=$(wc -l < "$list" | tr -d ' ')
printf '#region\t%s\tsamples\t%s\n' "$region" "$n" > "$out.tmp"
sort "$list" | while read -r id; do
  case "$id" in */"$region") ;; *) echo "upstream $id is not in region $region" >&2; exit 1 ;; esac
  vcf="anamo-out/call/$id.vcf"
  [ -s "$vcf" ] || { echo "missing input $vcf" >&2; exit 1; }
  cat "$vcf"
done >> "$out.tmp"
mv "$out.tmp" "$out"
# One line per run: the end-to-end test checks that every region ran exactly once.
echo "$region" >> anamo-out/joint/runs.log
