#!/bin/sh
# Reference fix, written by a script so the oracle exercises solve.sh as well as file copies.
set -e
cat > rotate.sh <<'SCRIPT'
#!/bin/sh
# rotate.sh DIR KEEP: keep only the KEEP newest backup-*.tar files in DIR.
usage() { echo "usage: rotate.sh DIR KEEP" >&2; exit 2; }
[ $# -eq 2 ] || usage
dir=$1
keep=$2
[ -d "$dir" ] || usage
case $keep in ''|*[!0-9]*) usage ;; esac
count=$(find "$dir" -maxdepth 1 -type f -name 'backup-*.tar' | wc -l)
excess=$((count - keep))
[ "$excess" -gt 0 ] || exit 0
find "$dir" -maxdepth 1 -type f -name 'backup-*.tar' | sed 's|.*/||' | sort | head -n "$excess" |
while read -r name; do
    rm -f "$dir/$name"
    echo "removed $name"
done
SCRIPT
chmod +x rotate.sh
