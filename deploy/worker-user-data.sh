#!/usr/bin/env bash
# Renders the worker bootstrap manifests/user-data.sh.tmpl for a launch template you manage
# yourself (an Auto Scaling group's, or an `ec2` fleet without `userData`).
#
# You do NOT need this for an `ec2` fleet whose manifest sets
# `provider.ec2.userData: .../user-data.sh.tmpl`: the controller renders the template itself at
# every launch. An `autoscaling` fleet cannot pass user data, so its group's launch template
# must carry it: render it here once per step and put it in the template (see
# deploy/aws-cli-walkthrough.md, step 5).
#
# The template itself is the single source: this script only fills in its {{name}}
# placeholders, exactly like the controller does (src/provider/user_data.rs; a test compares
# the two), with the values a fleet manifest would give.
#
# Usage:
#   deploy/worker-user-data.sh --step STEP --store dynamodb://TABLE [options] [-- WORKER_ARG...]
#
# Options (defaults are the fleet manifest's defaults):
#   --step STEP          pipeline step the workers claim (required)
#   --store URL          task store, dynamodb://TABLE (required)
#   --fleet NAME         fleet name, used in log lines and the unit description [STEP]
#   --cluster NAME       controller (cluster) name [anamo]
#   --region REGION      AWS region for the worker [empty: the instance's own region]
#   --slots N            slotsPerInstance [1]
#   --lease-ttl DUR      leaseTTL [60s]
#   --heartbeat DUR      heartbeat [a third of --lease-ttl]
#   --idle-exit DUR      idleExit: power the instance off after this idle time [unset]
#   --anamo-url URL      s3:// or https:// URL of the anamo binary [empty: the AMI has it]
#   --log-url URL        logUrl: store task logs under s3://BUCKET/PREFIX or file:///DIR [unset]
#   --template PATH      template to render [manifests/user-data.sh.tmpl next to this script]
# Durations are a whole number with a unit: 1500ms, 90s, 5m, 2h.
# Arguments after `--` are appended to the `anamo worker` command line (fleet `workerArgs`).
#
# Example (the `call` step of manifests/examples/genomics-autoscaling.yaml):
#   deploy/worker-user-data.sh --step call --store dynamodb://genomics-tasks \
#       --cluster genomics-prod --slots 4 --lease-ttl 2m --idle-exit 15m > call-user-data.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() {
    printf 'worker-user-data.sh: %s\n' "$*" >&2
    exit 2
}
usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

# to_ms DUR: prints DUR in milliseconds.
to_ms() {
    local d=$1 n
    case "$d" in
        *ms) n=${d%ms} ;;
        *s) n=${d%s} ;;
        *m) n=${d%m} ;;
        *h) n=${d%h} ;;
        *) die "\`$d\` is not a duration like 90s, 5m, 2h or 1500ms" ;;
    esac
    [[ $n =~ ^[0-9]+$ ]] || die "\`$d\` is not a duration like 90s, 5m, 2h or 1500ms"
    case "$d" in
        *ms) echo $((10#$n)) ;;
        *s) echo $((10#$n * 1000)) ;;
        *m) echo $((10#$n * 60000)) ;;
        *h) echo $((10#$n * 3600000)) ;;
    esac
}

# fmt_ms MS: a duration as the worker's flags take it (whole seconds, else milliseconds).
fmt_ms() {
    if (($1 % 1000 == 0)); then echo "$(($1 / 1000))s"; else echo "$1ms"; fi
}

# shell_quote WORD: WORD quoted for a POSIX shell (left as is when made of safe characters).
shell_quote() {
    local w=$1 q="'\\''"
    if [[ -n $w && $w =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
        printf '%s' "$w"
    else
        printf "'%s'" "${w//\'/$q}"
    fi
}

step='' store='' fleet='' cluster=anamo region='' slots=1 lease_ttl=60s heartbeat=''
idle_exit='' anamo_url='' log_url='' template=$here/../manifests/user-data.sh.tmpl
while [ $# -gt 0 ]; do
    case "$1" in
        --step | --store | --fleet | --cluster | --region | --slots | --lease-ttl | \
            --heartbeat | --idle-exit | --anamo-url | --log-url | --template)
            [ $# -ge 2 ] || die "$1 needs a value"
            var=${1#--}
            var=${var//-/_}
            printf -v "$var" '%s' "$2"
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        --)
            shift
            break
            ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$step" ] || die "--step is required"
[ -n "$store" ] || die "--store is required"
[ -n "$fleet" ] || fleet=$step
[[ $slots =~ ^[1-9][0-9]*$ ]] || die "--slots must be a whole number of at least 1"
for v in "$step" "$store" "$fleet" "$cluster" "$region" "$anamo_url" "$log_url"; do
    case "$v" in
        *"'"* | *$'\n'*) die "values may not contain quotes or newlines: $v" ;;
    esac
done

lease_ms=$(to_ms "$lease_ttl")
if [ -n "$heartbeat" ]; then heartbeat_ms=$(to_ms "$heartbeat"); else heartbeat_ms=$((lease_ms / 3)); fi
((heartbeat_ms < lease_ms)) || die "--heartbeat must be shorter than --lease-ttl"
idle=''
if [ -n "$idle_exit" ]; then idle=$(fmt_ms "$(to_ms "$idle_exit")"); fi
args=''
for a in "$@"; do
    args+="${args:+ }$(shell_quote "$a")"
done

declare -A values=(
    [cluster]=$cluster [fleet]=$fleet [step]=$step [store]=$store [region]=$region
    [slots]=$slots [lease_ttl]=$(fmt_ms "$lease_ms") [heartbeat]=$(fmt_ms "$heartbeat_ms")
    [idle_exit]=$idle [worker_args]=$args [anamo_url]=$anamo_url [log_url]=$log_url
)

[ -r "$template" ] || die "cannot read the template $template"
rest=$(cat "$template") || exit 2
# $(...) drops trailing newlines; the template ends with exactly one.
out='' unknown=()
while [[ $rest == *'{{'* ]]; do
    out+=${rest%%'{{'*}
    rest=${rest#*'{{'}
    inner=${rest%%'}}'*}
    name=${inner#"${inner%%[! ]*}"}
    name=${name%"${name##*[! ]}"}
    if [[ $rest == *'}}'* && $name =~ ^[A-Za-z0-9_]+$ ]]; then
        if [[ -v "values[$name]" ]]; then out+=${values[$name]}; else unknown+=("{{$name}}"); fi
        rest=${rest#*'}}'}
    else
        out+='{{'
    fi
done
out+=$rest
if [ ${#unknown[@]} -gt 0 ]; then
    die "template $template: no value for $(printf '%s\n' "${unknown[@]}" | sort -u | paste -sd, -)"
fi
size=$(($(printf '%s\n' "$out" | wc -c)))
((size <= 16384)) || die "the user data is $size bytes; EC2 allows at most 16384"
printf '%s\n' "$out"
