#!/bin/sh
# rotate.sh DIR KEEP: keep only the KEEP newest backup-*.tar files in DIR.
dir=$1
keep=$2
count=$(ls "$dir" | wc -l)
excess=$((count - keep))
ls "$dir" | sort -r | head -n "$excess" | while read -r name; do
    rm -f "$dir/$name"
    echo "removed $name"
done
