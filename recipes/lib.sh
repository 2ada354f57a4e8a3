# Shared by the recipes (sourced): DRY_RUN=1 prints each command instead of running it.
DRY_RUN=${DRY_RUN:-0}

run() {
  echo "+ $*" >&2
  if [[ "$DRY_RUN" != 1 ]]; then "$@"; fi
}

made_before() {  # made_before FILE: true, with a line saying so, when an earlier run of the recipe made FILE
  # (mtkit writes models and translations atomically, so a file that exists is whole)
  if [[ "$DRY_RUN" != 1 && -s "$1" ]]; then echo "= $1: made by an earlier run, kept" >&2; return 0; fi
  return 1
}
