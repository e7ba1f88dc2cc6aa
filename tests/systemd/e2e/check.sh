#!/bin/sh
# Runs inside the booted test container (edgecap-e2e.service) against the installed unit;
# writes key=value results for tests/systemd/test_container.py. The unit powers the
# container off when this ends, however it ends (SuccessAction=, FailureAction=).
R=/var/lib/edgecap-e2e/result
mkdir -p /var/lib/edgecap-e2e
: > "$R"
say() { printf '%s=%s\n' "$1" "$2" >> "$R"; }
wait_active() {
  for _ in $(seq 60); do
    [ "$(systemctl is-active edgecap)" = active ] && return 0
    sleep 0.5
  done
  return 1
}
prop() { systemctl show -p "$1" --value edgecap; }

if ! wait_active; then
  # nothing below can pass: say why (the unit's last words) and end the boot now
  say active "$(systemctl is-active edgecap)"
  say journal "$(journalctl -u edgecap -o cat -n 40 | tr '\n' '|')"
  exit 1
fi
say active "$(systemctl is-active edgecap)"
sleep 2
say status "$(prop StatusText)"
say user "$(ps -o user= -p "$(prop MainPID)" | tr -d ' ')"
say socket "$(stat -c '%U:%G %a' /run/edgecap/captions.sock 2>/dev/null)"

# reload: the daemon says RELOADING, applies, and stays up
systemctl reload edgecap
sleep 2
say after_reload "$(systemctl is-active edgecap)"
say reload_logged "$(journalctl -u edgecap -o cat | grep -c 'reload: configuration applied')"

# a hung daemon: stop it dead; the watchdog (4 s in this test) must kill and restart it
n0=$(prop NRestarts)
kill -STOP "$(prop MainPID)"
sleep 10
wait_active
say watchdog_restarts "$(( $(prop NRestarts) - n0 ))"
say watchdog_logged "$(journalctl -u edgecap -o cat | grep -ci 'watchdog timeout')"

# the key comes through LoadCredential=; the service is unreachable (private network)
echo "e2e-key-not-real" > /etc/edgecap/credentials/soniox_api_key
printf '[daemon]\nservice = soniox\n[soniox]\nurl = wss://127.0.0.1:9/x\n[link]\nretry_max = 2s\n' \
  > /etc/edgecap/edgecap.ini.d/20-soniox.ini
systemctl restart edgecap
wait_active
sleep 6
say cred_active "$(systemctl is-active edgecap)"
say cred_status "$(prop StatusText)"
say field_retrying "$(journalctl -u edgecap EDGECAP_STATE=retrying EDGECAP_SERVICE=soniox -o cat | wc -l)"
say key_in_journal "$(journalctl -u edgecap -o cat | grep -c e2e-key-not-real)"

# a config error: exit 78, and no restart loop
printf '[gate]\naggressiveness = 9\n' > /etc/edgecap/edgecap.ini.d/30-bad.ini
n0=$(prop NRestarts)
systemctl restart edgecap
sleep 8
say bad_active "$(systemctl is-active edgecap)"
say bad_exit "$(prop ExecMainStatus)"
say bad_restarts "$(( $(prop NRestarts) - n0 ))"
say bad_logged "$(journalctl -u edgecap -o cat | grep -c 'gate.aggressiveness')"
say done yes
