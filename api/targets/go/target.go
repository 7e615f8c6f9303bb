// Command target is an example cronfence webhook target: Go, standard library only.
//
//	CRONFENCE_SECRET=... go run . PORT EFFECTS_FILE
//
// (or PORT and EFFECTS_FILE in the environment; port 0 picks a free one,
// printed as "listening on 127.0.0.1:PORT"). The contract is DESIGN §5:
//
//  1. Verify Cronfence-Signature, t=<unix seconds>,v2=<hex>, where
//     v2 = hex(HMAC-SHA256(secret, t + "\n" + Cronfence-Job + "\n" +
//     Fencing-Token + "\n" + Idempotency-Key + "\n" + raw body)), and refuse
//     a t more than 5 minutes old (or ahead): 401. (A Standard Webhooks
//     library could check webhook-signature instead, given "whsec_" +
//     base64(secret).)
//  2. Check that the Idempotency-Key starts with "<Cronfence-Job>@" and that
//     the body's "job", when it has one, is Cronfence-Job: 400 otherwise. The
//     key of a scheduled firing is "<job>@<instant>", of a manual run
//     "<job>@manual-<run id>"; a delivery of one job replayed as another's
//     fails here or at the signature.
//  3. Together with the effect: a seen Idempotency-Key gets 200 and nothing is
//     done again; a fencing token lower than the highest in its fence scope
//     gets 409; otherwise do the work and remember the key and the token.
//
// The fence scope is the Cronfence-Fence-Scope header. "job" (overlap forbid
// or queue; also what a delivery without the header means): keep the highest
// token per job. "slot" (overlap allow, whose slots may overlap and arrive out
// of token order): keep it per Idempotency-Key, so a new key is accepted even
// below the job's highest. The header is not signed: a job once accepted with
// scope "job" stays "job", whatever a later delivery says.
//
// The "work" here is appending a JSON line {job, token, key, run_id} to
// EFFECTS_FILE.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

const maxAgeSeconds = 300 // oldest (or most future) signature t accepted
const maxBodyBytes = 1 << 20

var digits = regexp.MustCompile(`^[0-9]{1,19}$`)

// target holds, per job, the highest accepted token (over every scope), its
// scope and the keys seen. In memory for the example, so a restart forgets
// it: a real target must store it in its database, in the same transaction
// as its effect (else a crash between the effect and the bookkeeping lets a
// retry run the effect twice).
type target struct {
	secret  []byte
	effects *os.File
	mu      sync.Mutex // held from the check to the record: they must not interleave
	highest map[string]int64
	scope   map[string]string // "job" or "slot"
	keys    map[string]map[string]bool
}

// signatureOK reports whether header carries one fresh t and a v2 that is our
// HMAC (any v2: a sender rotating its secret sends one per secret); every v2
// is compared in constant time. Other schemes (the retired v1) are ignored.
func (tg *target) signatureOK(header, job, token, key string, body []byte) bool {
	var times, candidates []string
	for _, item := range strings.Split(header, ",") {
		name, value, _ := strings.Cut(item, "=")
		if name == "t" {
			times = append(times, value)
		} else if name == "v2" {
			candidates = append(candidates, value)
		}
	}
	if len(times) != 1 || !digits.MatchString(times[0]) || len(candidates) == 0 {
		return false
	}
	t, err := strconv.ParseInt(times[0], 10, 64)
	now := time.Now().Unix()
	if err != nil || t < now-maxAgeSeconds || t > now+maxAgeSeconds {
		return false
	}
	mac := hmac.New(sha256.New, tg.secret)
	fmt.Fprintf(mac, "%s\n%s\n%s\n%s\n", times[0], job, token, key)
	mac.Write(body) // the raw bytes: the MAC is over them, not over parsed JSON
	want := mac.Sum(nil)
	matched := false
	for _, v2 := range candidates {
		got, err := hex.DecodeString(v2)
		if err != nil || len(got) != sha256.Size {
			return false
		}
		matched = hmac.Equal(got, want) || matched // all compared: no early exit
	}
	return matched
}

// bodyJob returns the body's "job" and true, or false when the body is not a
// JSON object with a "job" member (a raw body); a "job" that is not a string
// is returned as "" and true, so it never matches.
func bodyJob(body []byte) (string, bool) {
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil {
		return "", false
	}
	raw, ok := doc["job"]
	if !ok {
		return "", false
	}
	var job string
	if json.Unmarshal(raw, &job) != nil {
		return "", true
	}
	return job, true
}

// deliver checks, performs and records one delivery; returns status and answer.
func (tg *target) deliver(job string, token int64, key, runID, scope string) (int, any) {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if tg.scope[job] == "job" {
		scope = "job" // never downgraded by the unsigned header
	}
	if tg.keys[job][key] {
		return http.StatusOK, map[string]string{"status": "duplicate"}
	}
	// >= and not >: an equal token comes from the same claim as the highest (a
	// retry of that firing, whose key you may have pruned). Fencing refuses
	// only an older lock holder, one whose token is lower. For scope "slot" the
	// highest is the key's, and a seen key is a repeat (above): a new key is
	// accepted whatever other slots accepted.
	if highest, ok := tg.highest[job]; ok && scope == "job" && token < highest {
		return http.StatusConflict, map[string]any{"status": "stale", "highest": highest}
	}
	line, _ := json.Marshal(map[string]any{"job": job, "token": token, "key": key, "run_id": runID})
	if _, err := tg.effects.Write(append(line, '\n')); err != nil { // the effect
		return refuse(http.StatusInternalServerError, err.Error())
	}
	if highest, ok := tg.highest[job]; !ok || token > highest {
		tg.highest[job] = token
	}
	tg.scope[job] = scope
	if tg.keys[job] == nil {
		tg.keys[job] = map[string]bool{}
	}
	tg.keys[job][key] = true
	return http.StatusOK, map[string]string{"status": "accepted"}
}

// refuse is the answer to a request that is not carried out.
func refuse(status int, reason string) (int, any) {
	return status, map[string]string{"status": "error", "error": reason}
}

// ServeHTTP answers any method and path: the job chooses them.
func (tg *target) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status, doc := tg.handle(w, r)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(doc)
}

func (tg *target) handle(w http.ResponseWriter, r *http.Request) (int, any) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return refuse(http.StatusRequestEntityTooLarge, "body too large")
	}
	signature, tokenText := r.Header.Get("Cronfence-Signature"), r.Header.Get("Fencing-Token")
	key, job := r.Header.Get("Idempotency-Key"), r.Header.Get("Cronfence-Job")
	if signature == "" || !tg.signatureOK(signature, job, tokenText, key, body) {
		return refuse(http.StatusUnauthorized, "bad signature")
	}
	token, err := strconv.ParseInt(tokenText, 10, 64) // up to 2^63-1
	if !digits.MatchString(tokenText) || err != nil { // ParseInt alone takes "+1"
		return refuse(http.StatusBadRequest, "bad fencing token")
	}
	// Every key, scheduled or manual, is "<job>@...", and the body names the
	// job too: all three must agree, or a replay could take another job's key
	// or raise its highest token.
	named, hasJob := bodyJob(body)
	if key == "" || job == "" || !strings.HasPrefix(key, job+"@") || (hasJob && named != job) {
		return refuse(http.StatusBadRequest, "bad cronfence-job")
	}
	scope := r.Header.Get("Cronfence-Fence-Scope")
	if len(r.Header.Values("Cronfence-Fence-Scope")) == 0 {
		scope = "job" // sent before the header existed
	} else if scope != "job" && scope != "slot" {
		return refuse(http.StatusBadRequest, "bad cronfence-fence-scope")
	}
	return tg.deliver(job, token, key, r.Header.Get("Cronfence-Run"), scope)
}

func main() {
	port, effectsPath := os.Getenv("PORT"), os.Getenv("EFFECTS_FILE")
	if len(os.Args) > 2 {
		port, effectsPath = os.Args[1], os.Args[2]
	}
	secret := os.Getenv("CRONFENCE_SECRET")
	if secret == "" || port == "" || effectsPath == "" { // an empty key would let anyone sign
		fmt.Fprintln(os.Stderr, "usage: CRONFENCE_SECRET=... target PORT EFFECTS_FILE")
		os.Exit(2)
	}
	effects, err := os.OpenFile(effectsPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	listener, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening on", listener.Addr())
	tg := &target{secret: []byte(secret), effects: effects,
		highest: map[string]int64{}, scope: map[string]string{}, keys: map[string]map[string]bool{}}
	fmt.Fprintln(os.Stderr, http.Serve(listener, tg))
	os.Exit(1)
}
