#!/bin/sh
# Minifies the website snippet with nothing but POSIX sh, grep and sed (no network, no npm):
#   sh js/build.sh js/ll.js OUT.js
#
# It drops whole-line comments, indentation and blank lines, squeezes out spaces next to
# punctuation, and joins the lines. A plain text tool can only do that safely for a source that
# follows the rules in ll.js's header, so it checks them and refuses a source that breaks them:
#   - a block comment opens at the start of its line and closes at the end of its line;
#   - a line comment is a whole line;
#   - every statement ends with a semicolon (lines are joined without ASI);
#   - string literals hold no spaces and no escaped quotes, and there are no template literals;
#     regular expressions hold no spaces (use \s or \x20);
#   - no "+ +" or "- -" (they would fuse into ++ and --);
#   - the config placeholder appears exactly once.
# When node is installed the result, with a config substituted, is also syntax-checked.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: sh js/build.sh SRC.js OUT.js" >&2
    exit 2
fi
src=$1
out=$2
[ -r "$src" ] || { echo "build.sh: cannot read $src" >&2; exit 1; }

die() {
    echo "build.sh: $src: $*" >&2
    exit 1
}

# "/*" must open its line and "*/" must end it: a comment with code before or after it would
# make the range deletion below eat code.
! grep -n '[^[:space:]].*/\*' "$src" >&2 || die "'/*' must open a line"
! grep -n '\*/.*[^[:space:]]' "$src" >&2 || die "'*/' must end a line"
[ "$(grep -c '__LL_CONFIG__' "$src" || true)" -eq 1 ] || die "the config placeholder must appear on exactly one line"

tmp="$out.tmp.$$"
code="$out.$$.check.cjs"
trap 'rm -f "$tmp" "$code"' EXIT HUP INT TERM

# 1. Comments, indentation, trailing blanks, blank lines. One-line block comments go first: a
#    range whose first line also closes would run on to the next comment's end (sed looks for
#    the end address from the following line on).
sed -e '/^[[:space:]]*\/\*.*\*\/[[:space:]]*$/d' \
    -e '/^[[:space:]]*\/\*/,/\*\/[[:space:]]*$/d' \
    -e '/^[[:space:]]*\/\//d' \
    -e 's/^[[:space:]]*//' \
    -e 's/[[:space:]]*$//' \
    -e '/^$/d' \
    "$src" >"$code"

# 2. What is left is code, one statement per line or so: check the rules the next steps rely on.
! grep -n '`' "$code" >&2 || die "no template literals"
! grep -n "^\\([^']*'[^']*'\\)*[^']*'[^' ]* " "$code" >&2 || die "a space inside a '...' string"
! grep -n '^\([^"]*"[^"]*"\)*[^"]*"[^" ]* ' "$code" >&2 || die 'a space inside a "..." string'
! grep -n -e '+ +' -e '- -' "$code" >&2 || die "'+ +' or '- -' would fuse"

# 3. Squeeze spaces next to punctuation (a space between two word characters stays), then
#    join the lines, keeping a space where two words would otherwise touch.
sed -e 's/ *\([^A-Za-z0-9_$ ]\) */\1/g' "$code" |
    sed -e ':a' -e '$!N' -e '$!ba' \
        -e 's/\([A-Za-z0-9_$]\)\n\([A-Za-z0-9_$]\)/\1 \2/g' \
        -e 's/\n//g' >"$tmp"
echo >>"$tmp"

# 4. The result must not have grown comment markers (say "a / /re/" squeezed to "a//re/") or
#    HTML-like comments (which classic scripts honour), and must keep the placeholder.
! grep -o -e '.\{0,30\}//.\{0,30\}' -e '.\{0,30\}/\*.\{0,30\}' -e '.\{0,30\}\*/.\{0,30\}' \
    -e '.\{0,30\}<!--.\{0,30\}' -e '.\{0,30\}-->.\{0,30\}' "$tmp" >&2 ||
    die "minifying made comment markers"
[ "$(grep -o '__LL_CONFIG__' "$tmp" | wc -l)" -eq 1 ] || die "the config placeholder did not survive"

if command -v node >/dev/null 2>&1; then
    sed 's/__LL_CONFIG__/{"dnt":true,"gpc":true,"dl":"pdf"}/' "$tmp" >"$code"
    node --check "$code" 2>&1 | sed 's/^/build.sh: /' >&2
    node --check "$code" >/dev/null 2>&1 || die "the minified file does not parse"
fi

mv "$tmp" "$out"
