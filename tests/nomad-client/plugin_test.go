package main

import "testing"

func TestCheckLog(t *testing.T) {
	for line, ok := range map[string]bool{
		`{"@level":"info","@message":"unit started","@module":"systemd","@timestamp":"2026-08-12T18:22:41.123456Z","unit":"a"}`: true,
		`{"@level":"debug","@message":"no timestamp is fine"}`:                                                                  true,
		`{"@level":"info","@message":{"not":"a string"}}`:                                                                       false,
		`{"@level":"warning","@message":"hclog has no level warning"}`:                                                          false,
		`{"@level":"info","@message":"m","@timestamp":"2026-08-12T18:22:41Z"}`:                                                  false,
		`plain text`: false,
	} {
		l := &Launch{Log: &syncBuf{}, Stderr: &syncBuf{}}
		_, _ = l.Stderr.Write([]byte(line + "\n"))
		if err := l.CheckLog(); (err == nil) != ok {
			t.Errorf("%s: %v", line, err)
		}
	}
}
