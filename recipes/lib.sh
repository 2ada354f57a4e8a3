# Shared by the recipes (sourced): DRY_RUN=1 prints each command instead of running it.
DRY_RUN=${DRY_RUN:-0}

run() {
  echo "+ $*" >&2
  if [[ "$DRY_RUN" != 1 ]]; then "$@"; fi
}
