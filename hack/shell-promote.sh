#!/usr/bin/env bash
# The shell way to promote, as the benchmarks' baseline (hack/bench.py promote and race).
#
# Iter8's GitOps tutorial promotes with a shell task that clones the Env repo, edits a
# file, commits and pushes (shared/seeds/iter8-argocd-gitops-tutorial.txt). This is that
# task done as a careful engineer would: a shallow single-branch clone, one line edited,
# one commit, and on a rejected push `git pull --rebase` and a retry, at most
# MAX_ATTEMPTS pushes. It sets the kustomization's `newTag:` to TAG.
#
#   hack/shell-promote.sh REPO_URL FILE TAG [MAX_ATTEMPTS] [BRANCH]
#
# Prints `attempts=N` and exits 0 once the push landed; exits 1 after MAX_ATTEMPTS
# rejected pushes, 2 when the edit changed nothing or the rebase conflicted.
set -euo pipefail

url=$1 file=$2 tag=$3 max_attempts=${4:-5} branch=${5:-main}
: "${GIT_AUTHOR_NAME:=shell-promote}" "${GIT_AUTHOR_EMAIL:=shell-promote@example.invalid}"
: "${GIT_COMMITTER_NAME:=$GIT_AUTHOR_NAME}" "${GIT_COMMITTER_EMAIL:=$GIT_AUTHOR_EMAIL}"
export GIT_AUTHOR_NAME GIT_AUTHOR_EMAIL GIT_COMMITTER_NAME GIT_COMMITTER_EMAIL

work=$(mktemp -d "${TMPDIR:-/tmp}/shell-promote.XXXXXX")
trap 'rm -rf "$work"' EXIT

git clone --quiet --depth 1 --single-branch --branch "$branch" "$url" "$work/env"
cd "$work/env"

# Only the value changes: indentation, quoting and the trailing comment stay as they were.
sed -E -i "s/^([[:space:]]*newTag:[[:space:]]*)\"[^\"]*\"/\\1\"$tag\"/" "$file"
if git diff --quiet; then
  echo "shell-promote: $file has no newTag line to set" >&2
  exit 2
fi
git commit --quiet --all --message "productpage: promote $tag"

attempt=1
until git push --quiet origin "HEAD:$branch" 2>"$work/push.err"; do
  if ! grep -qE 'rejected|fetch first|non-fast-forward|failed to update ref|cannot lock ref' "$work/push.err"; then
    cat "$work/push.err" >&2   # not a lost race: a real failure
    exit 1
  fi
  if (( attempt >= max_attempts )); then
    echo "attempts=$attempt gave-up"
    exit 1
  fi
  attempt=$((attempt + 1))
  if ! git pull --quiet --rebase origin "$branch"; then
    git rebase --abort 2>/dev/null || true
    echo "shell-promote: rebase onto $branch conflicted" >&2
    exit 2
  fi
done
echo "attempts=$attempt"
