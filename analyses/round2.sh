#!/usr/bin/env bash
# The second round's pre-registered pipeline for one model (analyses/README.md, "Second round"),
# as named steps run in order. Every step resumes: after an interruption, run the same steps again
# and finished work is skipped (run folders with result.json, cached head scores, checkpoints).
#
#   analyses/round2.sh gemma3-270m proxy readouts discovery-cdt lr-circuit lr primary   # and, beside it,
#   analyses/round2.sh gemma3-270m lr-dense
#
# Steps (NusaX, Indonesian proxy):
#   proxy          fine-tune the proxy on Indonesian NusaX (3 epochs, best valid epoch kept)
#   readouts       the proxy on every language's test split -> the retention language RET
#   discovery-cdt  discovery-size study with CD-T only, at 30 sentences and, if 30 is not stable,
#                  at 90: all the rule for D needs (150 wins when neither is stable)
#   discovery-all  the estimators' study, reduced by the fifth execution note: CD-T, attribution
#                  and ablation at 30 sentences (5 pairs; agreement, faithfulness; the cached CD-T
#                  scores reused), and attribution alone at 30, 90 and 150 (discovery_size_attribution/)
#   lr-dense       learning-rate grid for the methods that need no circuit (full, ln-only)
#   lr-circuit     learning-rate grid for ct-sft, near-zero and random (needs D)
#   lr             the whole grid (runs what the two above left) and the selection of each rate
#   primary        the NusaX family: jav and bug (SmolLM2: jav, bug, sun, min), 6 methods, 3 seeds
#                  (needs D, RET and the rates)
#   primary-dense  the part of it that needs no circuit (zero-shot, full, ln-only), and
#   primary-circuit  the rest (ct-sft, near-zero, random): one per core, then primary for the tables
#   wider          sun and min, k = 5% and 10%
# Steps (XNLI, English proxy; D is the NusaX study's, max-len 128, 1000 test pairs, 498 valid;
# each method at the rate chosen for it on NusaX, fifth execution note):
#   xnli-proxy     fine-tune the proxy on English XNLI (its dev set's 80% cut; 1 epoch, sixth
#                  execution note); resumes mid-epoch after an interruption on the same machine
#                  (prepare-proxy keeps its state beside the proxy)
#   xnli-readouts  the XNLI proxy on 1000 test pairs of every language -> XNLI's RET
#   xnli           the first XNLI family: sw and ur, 6 methods, 3 seeds (xnli/)
#   xnli-hi-ar     the second: hi and ar (xnli_hi_ar/), each family Holm-corrected on its own
# Steps (readers, after the sweeps they read):
#   readers        editing vs preserving (NusaX family and wider grid pooled), forgetting (NusaX
#                  family; XNLI too when done), and
#                  circuits across languages (NusaX, CD-T, D per label)
#   collect        finished runs' records into the results folders (before committing mid-sweep)
#   restore        on a fresh machine (work folders gone, proxy retrained): committed records made
#                  with this same proxy, or with one that passes proxy_equivalence.py's check (a
#                  retraining on another CPU), back into the work folders, so the sweeps skip them;
#                  for each proxy retrained here (ind, en or both: an XNLI session needs only en)
# METHODS="full" (any subset) limits primary, wider or the XNLI families to those methods, so that one full fine-tuning
# and the sparse methods can run side by side in the same work folder (the tables list every run);
# TARGETS="bug" (any subset of the family's targets) likewise splits primary by target, one process
# per core.
# lr-dense and lr-circuit share the work folder and may run at the same time (one per core);
# lr, which reads both, must start after both have finished. Likewise primary-dense and
# primary-circuit (one full fine-tuning and one sparse run fit in 24 GB; two full ones do not).
# D (discovery sentences per label) and RET are read from the JSON the earlier steps wrote, by the
# pre-registered rules (analyses/round2_choices.py). Paths: results (JSON, committed) under
# analyses/results/round2/<model>/, checkpoints and run folders under runs/analyses/round2/<model>/.
set -euo pipefail

# All in one function, so that bash has parsed the whole script before the (long) first step runs:
# editing this file while it runs cannot change what the running copy does.
main() {
  cd "$(dirname "$0")/.."
  [ $# -ge 2 ] || { sed -n "2,/^[^#]/{/^#/p}" "$0"; exit 2; }
  M=$1
  shift
  PY=${PY:-python}
  export CT_DATA_DIR=${CT_DATA_DIR:-../shared/data} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  # One instruction set on every x86 machine: ATen's kernels otherwise follow the CPU (AVX-512 where
  # it has it), and the floating-point sums, hence a retrained proxy's weights, with them. AVX2 is
  # what an AVX2-only machine picks anyway (a Gemma proxy's forward and backward bit-identical with
  # and without these); execution notes, fourth part.
  export ATEN_CPU_CAPABILITY=${ATEN_CPU_CAPABILITY:-avx2} MKL_ENABLE_INSTRUCTIONS=${MKL_ENABLE_INSTRUCTIONS:-AVX2} \
    DNNL_MAX_CPU_ISA=${DNNL_MAX_CPU_ISA:-AVX2}
  R=analyses/results/round2/$M
  W=runs/analyses/round2/$M
  SIZES="--max-len 64 --batch-size 8"
  # The NusaX family's targets (pre-registration): Gemma's primary family is jav and bug (sun and min
  # are its wider grid); SmolLM2's one NusaX family is jav, bug, sun and min.
  case $M in
    smollm2-135m) FAMILY_TARGETS="jav bug sun min" ;;
    *) FAMILY_TARGETS="jav bug" ;;
  esac
  FAMILY_TARGETS=${TARGETS:-$FAMILY_TARGETS}
  mkdir -p "$R" "$W"

  choice() { $PY analyses/round2_choices.py "$1" --results "$R"; }
  common() {
    echo --proxy "$W/proxy-ind" --model "$M" --proxy-langs ind --estimator cdt --stabilize \
      --k 0.05 --n-train 100 $SIZES "$@"
  }
  xcommon() {
    echo --proxy "$W/proxy-xnli-en" --model "$M" --proxy-langs en --estimator cdt --stabilize \
      --k 0.05 --n-train 100 --n-valid 498 --max-len 128 --batch-size 8 --discovery-per-class "$(choice d)" "$@"
  }
  sweep() {  # sweep METHOD...
    echo $(common --discovery-per-class "$(choice d)") \
      --methods "$@" --seeds 0 1 2 --n-test 400 --epochs 5 \
      --lr-from "$R/lr_nusax/selection.json" --exclude-epoch0 --retention "$(choice ret)"
  }

  for step in "$@"; do
    echo "[round2 $M] $step ($(date -u +%H:%M:%S))"
    case $step in
      proxy)
        [ -f "$W/proxy-ind/circuit_transfer.json" ] ||
          $PY -m circuit_transfer.cli prepare-proxy --model "$M" --lang ind $SIZES --epochs 3 --out "$W/proxy-ind"
        $PY analyses/round2_choices.py proxy-summary --results "$R" --proxy "$W/proxy-ind" ;;
      readouts)
        mkdir -p "$R/readouts"
        [ -f "$R/readouts/eval-ind.json" ] ||
          $PY -m circuit_transfer.cli evaluate --model "$W/proxy-ind" --langs all --max-len 64 --batch-size 16 \
            --out "$R/readouts/eval-ind.json"
        echo "RET = $(choice ret)" ;;
      discovery-cdt)
        for sizes in "30" "30 90"; do  # the smallest size that decides D (see round2_choices.py)
          $PY analyses/discovery_size.py --proxy "$W/proxy-ind" --model "$M" --stabilize $SIZES \
            --estimators cdt --sizes $sizes --out "$R/discovery_size"
          if choice d > /dev/null 2>&1; then break; fi
        done
        echo "D = $(choice d) per label" ;;
      discovery-all)
        $PY analyses/discovery_size.py --proxy "$W/proxy-ind" --model "$M" --stabilize $SIZES \
          --estimators cdt attribution ablation --sizes 30 --out "$R/discovery_size"
        $PY analyses/discovery_size.py --proxy "$W/proxy-ind" --model "$M" --stabilize $SIZES \
          --estimators attribution --sizes 30 90 150 --out "$R/discovery_size_attribution" ;;
      lr-dense)
        $PY analyses/lr_selection.py --task nusax $(common) --methods full ln-only --targets jav bug \
          --out "$R/lr_nusax_dense" --work "$W/lr_nusax" ;;
      lr-circuit)
        $PY analyses/lr_selection.py --task nusax $(common --discovery-per-class "$(choice d)") \
          --methods ct-sft near-zero random --targets jav bug --out "$R/lr_nusax" --work "$W/lr_nusax" ;;
      lr)
        $PY analyses/lr_selection.py --task nusax $(common --discovery-per-class "$(choice d)") \
          --targets jav bug --out "$R/lr_nusax" --work "$W/lr_nusax" ;;
      primary | primary-dense | primary-circuit)
        mkdir -p "$R/nusax_primary/circuits"
        [ -f "$R/nusax_primary/circuits/scores-ind.json" ] ||
          cp "$R/lr_nusax/circuits/scores-ind.json" "$R/nusax_primary/circuits/"
        case $step in
          primary) methods=${METHODS:-zero-shot full ct-sft near-zero random ln-only} ;;
          primary-dense) methods="zero-shot full ln-only" ;;
          primary-circuit) methods="ct-sft near-zero random" ;;
        esac
        $PY analyses/nusax_transfer.py $(sweep $methods) --targets $FAMILY_TARGETS --out "$R/nusax_primary" \
          --work "$W/nusax_primary" ;;
      wider)
        mkdir -p "$R/nusax_wider/circuits"
        [ -f "$R/nusax_wider/circuits/scores-ind.json" ] ||
          cp "$R/lr_nusax/circuits/scores-ind.json" "$R/nusax_wider/circuits/"
        $PY analyses/nusax_transfer.py $(sweep ${METHODS:-zero-shot full ct-sft near-zero random ln-only}) --targets sun min --k 0.05 0.10 --out "$R/nusax_wider" \
          --work "$W/nusax_wider" ;;
      xnli-proxy)
        [ -f "$W/proxy-xnli-en/circuit_transfer.json" ] ||
          $PY -m circuit_transfer.cli prepare-proxy --task xnli --model "$M" --lang en --max-len 128 --batch-size 8 \
            --epochs 1 --n-test 1000 --out "$W/proxy-xnli-en"
        $PY analyses/round2_choices.py proxy-summary --results "$R" --proxy "$W/proxy-xnli-en" ;;
      xnli-readouts)
        mkdir -p "$R/readouts"
        [ -f "$R/readouts/eval-xnli-en.json" ] ||
          $PY -m circuit_transfer.cli evaluate --model "$W/proxy-xnli-en" --task xnli --langs all --n 1000 \
            --max-len 128 --batch-size 16 --out "$R/readouts/eval-xnli-en.json"
        echo "XNLI RET = $($PY analyses/round2_choices.py ret --task xnli --results "$R")" ;;
      xnli | xnli-hi-ar)
        case $step in
          xnli) out=xnli targets="sw ur" ;;
          xnli-hi-ar) out=xnli_hi_ar targets="hi ar" ;;
        esac
        mkdir -p "$R/$out/circuits"
        [ -f "$R/$out/circuits/scores-en.json" ] || [ ! -f "$R/xnli/circuits/scores-en.json" ] ||
          cp "$R/xnli/circuits/scores-en.json" "$R/$out/circuits/"
        $PY analyses/xnli_transfer.py $(xcommon) --methods ${METHODS:-zero-shot full ct-sft near-zero random ln-only} \
          --seeds 0 1 2 --n-test 1000 --epochs 5 --lr-from "$R/lr_nusax/selection.json" --lr-from-proxy ind \
          --exclude-epoch0 --retention "$($PY analyses/round2_choices.py ret --task xnli --results "$R")" \
          --targets $targets --out "$R/$out" --work "$W/$out" ;;
      readers)
        xnli=() nusax=("$R/nusax_primary")
        [ -f "$R/xnli/records.json" ] && xnli=(--xnli "$R/xnli")
        [ -f "$R/nusax_wider/records.json" ] && nusax+=("$R/nusax_wider")
        $PY analyses/editing_vs_preserving.py --nusax "${nusax[@]}" "${xnli[@]}" --out "$R/editing_vs_preserving"
        $PY analyses/forgetting.py --transfer "$R/nusax_primary" ${xnli[@]:1} --out "$R/forgetting"
        $PY analyses/circuits_across_languages.py --proxy "$W/proxy-ind" --model "$M" --estimator cdt --stabilize \
          --discovery-per-class "$(choice d)" --k 0.05 --max-len 64 --transfer "$R/nusax_primary" \
          --out "$R/circuits_across_languages" --work "$W/circuits_across_languages" ;;
      collect)
        $PY analyses/round2_choices.py collect --results "$R" --work "$W" ;;
      restore)
        proxies=()  # the proxies trained on this machine: a session may retrain only one of them
        for p in "$W/proxy-ind" "$W/proxy-xnli-en"; do [ -f "$p/circuit_transfer.json" ] && proxies+=("$p"); done
        [ ${#proxies[@]} -gt 0 ] || { echo "restore: no proxy in $W; run the proxy or xnli-proxy step first" >&2; exit 2; }
        $PY analyses/round2_choices.py restore --results "$R" --work "$W" --proxy "${proxies[@]}" \
          --discovery-per-class "$(choice d)" ;;
      *) echo "unknown step $step (see the header of $0)" >&2; exit 2 ;;
    esac
  done
}

main "$@"; exit $?
