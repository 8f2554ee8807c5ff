// Command etcd_load is vstamp's load generator for etcd: C concurrent clients, each with one
// request in flight, put fixed-size values under random keys for a number of seconds through one
// shared client connection, then it prints one JSON line with the fields `vstamp bench --json`
// prints. Built by bench/compare.sh against Debian's etcd client packages.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	index := int(q*float64(len(sorted))+0.999999) - 1
	if index < 0 {
		index = 0
	}
	if index >= len(sorted) {
		index = len(sorted) - 1
	}
	return float64(sorted[index].Microseconds()) / 1000
}

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated endpoints")
	clients := flag.Int("clients", 1, "concurrent clients")
	seconds := flag.Float64("seconds", 5, "measured duration")
	warmup := flag.Float64("warmup", 1, "seconds of load before measuring")
	valueSize := flag.Int("value-size", 64, "bytes per value")
	keys := flag.Int("keys", 1000, "distinct keys")
	flag.Parse()

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*endpoints, ","),
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd_load: cannot connect:", err)
		os.Exit(1)
	}
	defer cli.Close()
	value := strings.Repeat("x", *valueSize)
	start := time.Now()
	measureFrom := start.Add(time.Duration(*warmup * float64(time.Second)))
	deadline := measureFrom.Add(time.Duration(*seconds * float64(time.Second)))
	samples := make([][]time.Duration, *clients)
	errors := make([]int, *clients)
	var wait sync.WaitGroup
	for c := 0; c < *clients; c++ {
		wait.Add(1)
		go func(c int) {
			defer wait.Done()
			random := rand.New(rand.NewSource(int64(c) + 1))
			for {
				now := time.Now()
				if now.After(deadline) {
					return
				}
				key := fmt.Sprintf("key:%d", random.Intn(*keys))
				_, err := cli.Put(context.Background(), key, value)
				if now.Before(measureFrom) {
					continue
				}
				if err != nil {
					errors[c]++
					continue
				}
				samples[c] = append(samples[c], time.Since(now))
			}
		}(c)
	}
	wait.Wait()
	var all []time.Duration
	failed := 0
	for c := range samples {
		all = append(all, samples[c]...)
		failed += errors[c]
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	out, _ := json.Marshal(map[string]interface{}{
		"system":  "etcd",
		"clients": *clients,
		"ops_s":   float64(len(all)) / *seconds,
		"p50_ms":  percentile(all, 0.5),
		"p99_ms":  percentile(all, 0.99),
		"errors":  failed,
	})
	fmt.Println(string(out))
}
