#!/bin/sh
# Port C, Markdown and Python sources from the libeffml 0.1 API to 0.2.
#
#   scripts/port-0.2.sh [FILE...]   rewrite the given files in place
#                                   (no FILE: every tracked *.c *.h *.md *.py *.sh *.txt *.cmake file)
#   scripts/port-0.2.sh --list      print the rename table (old<TAB>new), one per line
#
# Renames are whole identifiers only (effml_knn is rewritten, effml_knn_x is not),
# done in one pass, so running the script twice changes nothing the second time.
# Include lines of the headers merged into effml/core.h (common.h, version.h,
# error.h, context.h) are rewritten too.  A file that included <effml/train.h>
# for what moved out of it (layers, optimizers, metrics, IDX loader,
# initialisers) should include <effml.h>, the one header a program needs.
# The table is the one in CHANGELOG.md (generated from this list).
set -eu

table() {
  cat <<'TABLE'
EFFML_LOG_ERROR	EFFML_CORE_LOG_ERROR
EFFML_LOG_WARN	EFFML_CORE_LOG_WARN
EFFML_LOG_INFO	EFFML_CORE_LOG_INFO
EFFML_LOG_DEBUG	EFFML_CORE_LOG_DEBUG
EFFML_MAX_DIMS	EFFML_TENSOR_MAX_DIMS
effml_dtype_name	effml_tensor_dtype_name
effml_dtype_size	effml_tensor_dtype_size
effml_init_xavier_uniform	effml_tensor_init_xavier_uniform
effml_init_xavier_normal	effml_tensor_init_xavier_normal
effml_init_kaiming_normal	effml_tensor_init_kaiming_normal
effml_init_kaiming_uniform	effml_tensor_init_kaiming_uniform
effml_init_normal	effml_tensor_init_normal
effml_init_uniform	effml_tensor_init_uniform
effml_npy_load	effml_io_npy_load
effml_npy_load_buffer	effml_io_npy_load_buffer
effml_npy_save	effml_io_npy_save
EFFML_SAFETENSORS_COPY	EFFML_IO_SAFETENSORS_COPY
EFFML_SAFETENSORS_MMAP	EFFML_IO_SAFETENSORS_MMAP
EFFML_MODE_INFER	EFFML_LAYER_MODE_INFER
EFFML_MODE_TRAIN	EFFML_LAYER_MODE_TRAIN
EFFML_LOAD_STRICT	EFFML_LAYER_LOAD_STRICT
effml_sequential_create	effml_layer_sequential_create
effml_sequential_add	effml_layer_sequential_add
effml_sequential_count	effml_layer_sequential_count
effml_sequential_get	effml_layer_sequential_get
effml_dense_create	effml_layer_dense_create
effml_activation_create	effml_layer_activation_create
effml_activation_name	effml_layer_activation_name
effml_dropout_create	effml_layer_dropout_create
effml_layernorm_create	effml_layer_layernorm_create
effml_activation_apply	effml__activation_apply
effml_activation_backward	effml__activation_backward
EFFML_ACT_IDENTITY	EFFML_LAYER_ACT_IDENTITY
EFFML_ACT_RELU	EFFML_LAYER_ACT_RELU
EFFML_ACT_GELU	EFFML_LAYER_ACT_GELU
EFFML_ACT_GELU_TANH	EFFML_LAYER_ACT_GELU_TANH
EFFML_ACT_SILU	EFFML_LAYER_ACT_SILU
EFFML_ACT_TANH	EFFML_LAYER_ACT_TANH
EFFML_SPARSE_ACT_NONE	EFFML_LAYER_ACT_IDENTITY
EFFML_SPARSE_ACT_RELU	EFFML_LAYER_ACT_RELU
effml_clip_grad_norm	effml_optimizer_clip_grad_norm
EFFML_LR_CONSTANT	EFFML_OPTIM_LR_CONSTANT
EFFML_LR_WARMUP_LINEAR	EFFML_OPTIM_LR_WARMUP_LINEAR
EFFML_LR_WARMUP_COSINE	EFFML_OPTIM_LR_WARMUP_COSINE
effml_fit_classifier	effml_train_classifier
effml_fit_options	effml_train_options
effml_fit_options_init	effml_train_options_init
effml_progress_fn	effml_train_progress_fn
effml_predict	effml_train_predict
effml_softmax_cross_entropy	effml_train_softmax_cross_entropy
effml_accuracy	effml_metrics_accuracy
effml_eval_nll	effml_metrics_nll
effml_eval_top1_error	effml_metrics_top1_error
effml_ood_auroc	effml_metrics_ood_auroc
effml_ood_fpr_at_tpr	effml_metrics_ood_fpr_at_tpr
effml_selective_aurc	effml_metrics_selective_aurc
effml_selective_coverage_at_risk	effml_metrics_selective_coverage_at_risk
effml_selective_risk_at_coverage	effml_metrics_selective_risk_at_coverage
effml_selective_risk_coverage_curve	effml_metrics_selective_risk_coverage_curve
EFFML_RC_EXACT	EFFML_METRICS_RC_EXACT
EFFML_RC_REFERENCE	EFFML_METRICS_RC_REFERENCE
effml_fashion_mnist_load	effml_data_fashion_mnist_load
effml_idx_load	effml_data_idx_load
EFFML_SPLIT_TRAIN	EFFML_DATA_SPLIT_TRAIN
EFFML_SPLIT_TEST	EFFML_DATA_SPLIT_TEST
effml_phm_create	effml_adapter_phm_create
effml_phm_materialize	effml_adapter_phm_materialize
effml_phm_options	effml_adapter_phm_options
effml_phm_options_init	effml_adapter_phm_options_init
effml_phm_set_path	effml_adapter_phm_set_path
effml_phm_shared_rule	effml_adapter_phm_shared_rule
effml_compacter_load_adapterhub	effml_adapter_compacter_load_adapterhub
effml_compacter_save_adapterhub	effml_adapter_compacter_save_adapterhub
effml_lora_base	effml_adapter_lora_base
effml_lora_create	effml_adapter_lora_create
effml_lora_is_merged	effml_adapter_lora_is_merged
effml_lora_load_peft	effml_adapter_lora_load_peft
effml_lora_merge	effml_adapter_lora_merge
effml_lora_merge_drift	effml_adapter_lora_merge_drift
effml_lora_options	effml_adapter_lora_options
effml_lora_options_init	effml_adapter_lora_options_init
effml_lora_save_peft	effml_adapter_lora_save_peft
effml_lora_scaling	effml_adapter_lora_scaling
effml_lora_unmerge	effml_adapter_lora_unmerge
effml_lokr_create	effml_adapter_lokr_create
effml_lokr_delta_weight	effml_adapter_lokr_delta_weight
effml_lokr_factorization	effml_adapter_lokr_factorization
effml_lokr_options	effml_adapter_lokr_options
effml_lokr_options_init	effml_adapter_lokr_options_init
EFFML_PHM_INIT_GLOROT_UNIFORM	EFFML_ADAPTER_PHM_INIT_GLOROT_UNIFORM
EFFML_PHM_INIT_GLOROT_NORMAL	EFFML_ADAPTER_PHM_INIT_GLOROT_NORMAL
EFFML_PHM_INIT_NORMAL	EFFML_ADAPTER_PHM_INIT_NORMAL
EFFML_PHM_INIT_ADAPTERS	EFFML_ADAPTER_PHM_INIT_ADAPTERS
EFFML_PHM_PATH_FACTORIZED	EFFML_ADAPTER_PHM_PATH_FACTORIZED
EFFML_PHM_PATH_MATERIALIZED	EFFML_ADAPTER_PHM_PATH_MATERIALIZED
EFFML_LORA_INIT_KAIMING_UNIFORM	EFFML_ADAPTER_LORA_INIT_KAIMING_UNIFORM
EFFML_LORA_INIT_GAUSSIAN	EFFML_ADAPTER_LORA_INIT_GAUSSIAN
EFFML_LOKR_SCALE_PEFT	EFFML_ADAPTER_LOKR_SCALE_PEFT
EFFML_LOKR_SCALE_LYCORIS	EFFML_ADAPTER_LOKR_SCALE_LYCORIS
EFFML_DST_RIGL	EFFML_SPARSE_DST_RIGL
EFFML_DST_SET	EFFML_SPARSE_DST_SET
EFFML_DST_STATIC	EFFML_SPARSE_DST_STATIC
EFFML_DST_DECAY_COSINE	EFFML_SPARSE_DST_DECAY_COSINE
EFFML_DST_DECAY_CONSTANT	EFFML_SPARSE_DST_DECAY_CONSTANT
effml_alias_sampler	effml_sampler_alias
effml_alias_sampler_create	effml_sampler_alias_create
effml_alias_sampler_draw	effml_sampler_alias_draw
effml_alias_sampler_free	effml_sampler_alias_free
effml_interleave	effml_sampler_interleave
effml_knn	effml_sampler_knn
effml_leverage_options	effml_sampler_leverage_options
effml_leverage_options_init	effml_sampler_leverage_options_init
effml_leverage_scores	effml_sampler_leverage_scores
effml_root_leverage_scores	effml_sampler_root_leverage_scores
effml_lewis_weights	effml_sampler_lewis_weights
effml_resample	effml_sampler_resample
effml_resample_apply	effml_sampler_resample_apply
effml_resample_options	effml_sampler_resample_options
effml_resample_options_init	effml_sampler_resample_options_init
effml_resample_plan	effml_sampler_resample_plan
effml_sampling_strategy_resolve	effml_sampler_strategy_resolve
effml_sensitivity_sample	effml_sampler_sensitivity_sample
effml_sensitivity_upper_bounds	effml_sampler_sensitivity_upper_bounds
effml_temperature_at	effml_sampler_temperature_at
effml_temperature_fn	effml_sampler_temperature_fn
effml_temperature_probs	effml_sampler_temperature_probs
effml_temperature_probs_alpha	effml_sampler_temperature_probs_alpha
effml_temperature_schedule	effml_sampler_temperature_schedule
effml_temperature_schedule_init	effml_sampler_temperature_schedule_init
effml_unimax	effml_sampler_unimax
effml_virtual_sizes	effml_sampler_virtual_sizes
effml_weighted_sample_merge	effml_sampler_weighted_sample_merge
EFFML_STRATEGY_AUTO	EFFML_SAMPLER_STRATEGY_AUTO
EFFML_STRATEGY_MINORITY	EFFML_SAMPLER_STRATEGY_MINORITY
EFFML_STRATEGY_NOT_MINORITY	EFFML_SAMPLER_STRATEGY_NOT_MINORITY
EFFML_STRATEGY_NOT_MAJORITY	EFFML_SAMPLER_STRATEGY_NOT_MAJORITY
EFFML_STRATEGY_ALL	EFFML_SAMPLER_STRATEGY_ALL
EFFML_STRATEGY_MAJORITY	EFFML_SAMPLER_STRATEGY_MAJORITY
EFFML_STRATEGY_RATIO	EFFML_SAMPLER_STRATEGY_RATIO
EFFML_STRATEGY_TARGETS	EFFML_SAMPLER_STRATEGY_TARGETS
EFFML_RESAMPLE_SMOTE	EFFML_SAMPLER_RESAMPLE_SMOTE
EFFML_RESAMPLE_BORDERLINE1	EFFML_SAMPLER_RESAMPLE_BORDERLINE1
EFFML_RESAMPLE_BORDERLINE2	EFFML_SAMPLER_RESAMPLE_BORDERLINE2
EFFML_RESAMPLE_ADASYN	EFFML_SAMPLER_RESAMPLE_ADASYN
EFFML_RESAMPLE_SMOTENC	EFFML_SAMPLER_RESAMPLE_SMOTENC
EFFML_RESAMPLE_RANDOM_OVER	EFFML_SAMPLER_RESAMPLE_RANDOM_OVER
EFFML_RESAMPLE_RANDOM_UNDER	EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER
EFFML_RESAMPLE_TOMEK	EFFML_SAMPLER_RESAMPLE_TOMEK
EFFML_RESAMPLE_ENN	EFFML_SAMPLER_RESAMPLE_ENN
EFFML_RESAMPLE_NEARMISS	EFFML_SAMPLER_RESAMPLE_NEARMISS
EFFML_RESAMPLE_RENN	EFFML_SAMPLER_RESAMPLE_RENN
EFFML_RESAMPLE_ALLKNN	EFFML_SAMPLER_RESAMPLE_ALLKNN
EFFML_RESAMPLE_NCL	EFFML_SAMPLER_RESAMPLE_NCL
EFFML_ENN_ALL	EFFML_SAMPLER_ENN_ALL
EFFML_ENN_MODE	EFFML_SAMPLER_ENN_MODE
EFFML_SCHEDULE_CONSTANT	EFFML_SAMPLER_SCHEDULE_CONSTANT
EFFML_SCHEDULE_LINEAR	EFFML_SAMPLER_SCHEDULE_LINEAR
EFFML_SCHEDULE_COSINE	EFFML_SAMPLER_SCHEDULE_COSINE
EFFML_SCHEDULE_COOLDOWN	EFFML_SAMPLER_SCHEDULE_COOLDOWN
EFFML_SCHEDULE_CUSTOM	EFFML_SAMPLER_SCHEDULE_CUSTOM
EFFML_STOP_FIRST_EXHAUSTED	EFFML_SAMPLER_STOP_FIRST_EXHAUSTED
EFFML_STOP_ALL_EXHAUSTED	EFFML_SAMPLER_STOP_ALL_EXHAUSTED
EFFML_STOP_ALL_EXHAUSTED_WITHOUT_REPLACEMENT	EFFML_SAMPLER_STOP_ALL_EXHAUSTED_WITHOUT_REPLACEMENT
EFFML_LEVERAGE_EXACT	EFFML_SAMPLER_LEVERAGE_EXACT
EFFML_LEVERAGE_SKETCH	EFFML_SAMPLER_LEVERAGE_SKETCH
EFFML_SAMPLE_BERNOULLI	EFFML_SAMPLER_DRAW_BERNOULLI
EFFML_SAMPLE_IID	EFFML_SAMPLER_DRAW_IID
effml_cascade_calibrate	effml_cascade_select_thresholds
effml_cascade_calibration_options	effml_cascade_threshold_options
effml_cascade_calibration_options_init	effml_cascade_threshold_options_init
effml_ensemble_predict	effml_cascade_ensemble_predict
EFFML_SCORE_MSP	EFFML_CASCADE_SCORE_MSP
EFFML_SCORE_ENTROPY	EFFML_CASCADE_SCORE_ENTROPY
EFFML_SCORE_MAX_LOGIT	EFFML_CASCADE_SCORE_MAX_LOGIT
EFFML_SCORE_ENERGY	EFFML_CASCADE_SCORE_ENERGY
EFFML_SCORE_MARGIN	EFFML_CASCADE_SCORE_MARGIN
EFFML_SCORE_DOCTOR	EFFML_CASCADE_SCORE_DOCTOR
TABLE
}

# Constant groups as prose writes them ("an EFFML_STOP_* value"): old prefix, new prefix.
groups() {
  cat <<'GROUPS'
EFFML_LOG_	EFFML_CORE_LOG_
EFFML_SAFETENSORS_	EFFML_IO_SAFETENSORS_
EFFML_MODE_	EFFML_LAYER_MODE_
EFFML_ACT_	EFFML_LAYER_ACT_
EFFML_SPARSE_ACT_	EFFML_LAYER_ACT_
EFFML_LR_	EFFML_OPTIM_LR_
EFFML_RC_	EFFML_METRICS_RC_
EFFML_SPLIT_	EFFML_DATA_SPLIT_
EFFML_PHM_INIT_	EFFML_ADAPTER_PHM_INIT_
EFFML_PHM_PATH_	EFFML_ADAPTER_PHM_PATH_
EFFML_LORA_INIT_	EFFML_ADAPTER_LORA_INIT_
EFFML_LOKR_SCALE_	EFFML_ADAPTER_LOKR_SCALE_
EFFML_DST_	EFFML_SPARSE_DST_
EFFML_DST_DECAY_	EFFML_SPARSE_DST_DECAY_
EFFML_STRATEGY_	EFFML_SAMPLER_STRATEGY_
EFFML_RESAMPLE_	EFFML_SAMPLER_RESAMPLE_
EFFML_ENN_	EFFML_SAMPLER_ENN_
EFFML_SCHEDULE_	EFFML_SAMPLER_SCHEDULE_
EFFML_STOP_	EFFML_SAMPLER_STOP_
EFFML_LEVERAGE_	EFFML_SAMPLER_LEVERAGE_
EFFML_SAMPLE_	EFFML_SAMPLER_DRAW_
EFFML_SCORE_	EFFML_CASCADE_SCORE_
GROUPS
}

if [ "${1-}" = "--list" ]; then
  table
  exit 0
fi

map=$(mktemp)
grp=$(mktemp)
trap 'rm -f "$map" "$grp"' EXIT
table >"$map"
groups >"$grp"

if [ "$#" -eq 0 ]; then
  cd "$(git rev-parse --show-toplevel)"
  git ls-files -z -- '*.c' '*.h' '*.md' '*.py' '*.sh' '*.txt' '*.cmake' '*.in' \
    ':!scripts/port-0.2.sh' ':!CHANGELOG.md' | xargs -0 sh "$0"
  exit 0
fi

# This script and CHANGELOG.md hold the old names on purpose: never rewrite them.
for f in "$@"; do
  shift
  case $(basename -- "$f") in
    port-0.2.sh | CHANGELOG.md) echo "port-0.2: skipping $f (it lists the old names)" >&2 ;;
    *) set -- "$@" "$f" ;;
  esac
done
[ "$#" -gt 0 ] || exit 0

# One pass per file: every identifier that is a key of the table is replaced by its value.
PORT_MAP="$map" PORT_GROUPS="$grp" perl -CSD -i -pe '
  BEGIN {
    open(my $fh, "<", $ENV{PORT_MAP}) or die "port-0.2: $!";
    while (<$fh>) { chomp; my ($o, $n) = split /\t/; $m{$o} = $n; }
    open(my $gh, "<", $ENV{PORT_GROUPS}) or die "port-0.2: $!";
    while (<$gh>) { chomp; my ($o, $n) = split /\t/; $g{$o} = $n; }
  }
  s/\b([A-Za-z_][A-Za-z0-9_]*)\b/exists $m{$1} ? $m{$1} : $1/ge;
  s/\b(EFFML_[A-Z0-9_]*_)\*/exists $g{$1} ? "$g{$1}*" : "$1*"/ge;
  s{(#\s*include\s*[<"])effml/(?:context|error|version|common)\.h([>"])}{$1effml/core.h$2}g;
' "$@"
