// A Go HTTP service with the incident's leak, for capturing real goroutine dumps.
// GET /broadcast starts a worker, waits up to 50 ms for its result on an unbuffered channel,
// and gives up; the worker's push takes 100 ms, then it blocks forever on the send.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"time"
)

func pushToAll(msg string) error {
	time.Sleep(100 * time.Millisecond) // a few slow subscribers
	return nil
}

func broadcastWorker(msg string, done chan error) {
	done <- pushToAll(msg) // LEAK: blocks forever once the handler has timed out
}

func handleBroadcast(w http.ResponseWriter, r *http.Request) {
	done := make(chan error) // unbuffered
	go broadcastWorker(r.URL.Query().Get("msg"), done)
	select {
	case err := <-done:
		fmt.Fprintln(w, "pushed", err)
	case <-time.After(50 * time.Millisecond):
		fmt.Fprintln(w, "timeout")
	}
}

func main() {
	http.HandleFunc("/broadcast", handleBroadcast)
	http.HandleFunc("/_count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, runtime.NumGoroutine())
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(os.Stdout, ln.Addr().String())
	log.Fatal(http.Serve(ln, nil))
}
