package agentproto

import "strconv"

// The two frames of every invocation, Invoke and Result, have their
// headers appended by hand: json.Marshal's reflection was about 11 µs of
// nubo serve's CPU per warm invocation on this project's VM, on the path
// between the client's request and the agent (docs/performance.md, session
// 20). The bytes are json.Marshal's own (TestAppendMatchesMarshal,
// FuzzAppendMatchesMarshal); a header that would need anything but plain
// ASCII strings, or a float, goes through json.Marshal instead.

// appender is a header that can append its JSON itself; ok is false when
// it cannot, and b must then be dropped.
type appender interface {
	appendJSON(b []byte) (_ []byte, ok bool)
}

func (v *Invoke) appendJSON(b []byte) ([]byte, bool) {
	if v == nil {
		return b, false
	}
	ok := true
	b, ok = appendField(b, `{"requestId":`, v.RequestID, ok)
	b = strconv.AppendInt(append(b, `,"deadlineMs":`...), v.DeadlineMs, 10)
	b, ok = appendField(b, `,"invokedFunctionArn":`, v.InvokedFunctionARN, ok)
	b, ok = appendOmitEmpty(b, `,"traceId":`, v.TraceID, ok)
	b, ok = appendOmitEmpty(b, `,"clientContext":`, v.ClientContext, ok)
	b, ok = appendOmitEmpty(b, `,"cognitoIdentity":`, v.CognitoIdentity, ok)
	b, ok = appendOmitEmpty(b, `,"tenantId":`, v.TenantID, ok)
	b = strconv.AppendInt(append(b, `,"timeoutMs":`...), v.TimeoutMs, 10)
	if v.Stream {
		b = append(b, `,"stream":true`...)
	}
	return append(b, '}'), ok
}

func (v *Result) appendJSON(b []byte) ([]byte, bool) {
	if v == nil || v.InitDurationMs != 0 {
		return b, false // json.Marshal's float format; once per init
	}
	ok := true
	b, ok = appendField(b, `{"requestId":`, v.RequestID, ok)
	if v.FunctionError {
		b = append(b, `,"functionError":true`...)
	}
	b, ok = appendOmitEmpty(b, `,"errorType":`, v.ErrorType, ok)
	b, ok = appendOmitEmpty(b, `,"contentType":`, v.ContentType, ok)
	if v.Reset {
		b = append(b, `,"reset":true`...)
	}
	return append(b, '}'), ok
}

func appendOmitEmpty(b []byte, key, s string, ok bool) ([]byte, bool) {
	if s == "" {
		return b, ok
	}
	return appendField(b, key, s, ok)
}

// appendField appends key and s as a JSON string, and whether s was plain:
// printable ASCII that json.Marshal writes as it is (it escapes '"', '\\'
// and, for HTML, '<', '>' and '&').
func appendField(b []byte, key, s string, ok bool) ([]byte, bool) {
	b = append(append(b, key...), '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&':
			ok = false
		}
	}
	return append(append(b, s...), '"'), ok
}
