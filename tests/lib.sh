# tests/lib.sh - the helpers the shell tests share, sourced as `. "$TY_SOURCE_DIR/tests/lib.sh"` after `set -euo
# pipefail`: a scratch folder $work removed on exit, the pass/fail counts (`fail` stops the test, `bad` counts a failure
# and goes on, `finish` prints the counts and fails the test if any check failed), and the checks several tests make:
# an exit code with a message on stderr, a Python predicate over a JSON file, identical bytes, and a conversion of an
# edited checkpoint that must be refused.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
# ok [NAME]: one check passed; a named one is printed.
ok() {
    [[ -z ${1-} ]] || echo "ok   $1"
    passed=$((passed + 1))
}
bad() {
    echo "FAIL: $*" >&2
    failed=$((failed + 1))
}
finish() {
    echo "$passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}

# exit_code NAME WANT_CODE WANT_STDERR_SUBSTRING CMD...: stops the test unless CMD exits WANT_CODE and says the
# substring on stderr (its output is left in $work/out and $work/err).
exit_code() {
    local name=$1 want=$2 msg=$3 rc=0
    shift 3
    "$@" > "$work/out" 2> "$work/err" || rc=$?
    [[ $rc == "$want" ]] || fail "$name: exit code $rc, want $want ($(cat "$work/err"))"
    grep -qF -- "$msg" "$work/err" || fail "$name: stderr lacks '$msg': $(cat "$work/err")"
    ok "$name"
}

# json_check NAME FILE PYTHON_EXPR (over `d`, the parsed JSON)
json_check() {
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if ($3) else 1)" "$2" ||
        fail "$1: $(head -c 400 "$2")"
    ok "$1"
}

# same_bytes NAME WANT_FILE GOT_FILE
same_bytes() {
    cmp -s "$2" "$3" || { diff "$2" "$3" | head -5 >&2; fail "$1: output differs"; }
    ok "$1"
}

# edit_json FILE STATEMENT: runs the Python STATEMENT on the dict c loaded from FILE and writes c back.
edit_json() {
    python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); exec(sys.argv[2]); json.dump(c, open(p, "w"))' \
        "$1" "$2"
}

# refused MODEL_DIR EDIT NEEDLE: a copy of the checkpoint MODEL_DIR (in $work/v) with config.json edited by the Python
# statement EDIT (on dict c) must be refused by `convert` with exit code 1, NEEDLE on stderr and no output file.
refused() {
    rm -rf "$work/v" "$work/x.gguf"
    cp -r "$1" "$work/v"
    edit_json "$work/v/config.json" "$2"
    local rc=0
    "$TONGYUN" convert "$work/v" "$work/x.gguf" > /dev/null 2> "$work/err" || rc=$?
    if [[ $rc -ne 1 ]]; then
        bad "[$2] exited $rc, want 1: $(cat "$work/err")"
    elif ! grep -qF -- "$3" "$work/err"; then
        bad "[$2] stderr lacks '$3': $(cat "$work/err")"
    elif [[ -e $work/x.gguf ]]; then
        bad "[$2] left an output file"
    else
        ok
    fi
}
