# shellcheck shell=sh
# Part of a guest /init: wait_file FILE STRING SECONDS waits until FILE
# exists and contains STRING ("" = only exists).
wait_file() {
	_end=$(( $(date +%s) + $3 ))
	while [ "$(date +%s)" -le "$_end" ]; do
		if [ -e "$1" ] && { [ -z "$2" ] || grep -q -- "$2" "$1"; }; then return 0; fi
		sleep 0.2
	done
	return 1
}
