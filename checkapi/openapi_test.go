package checkapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

var spec struct {
	once   sync.Once
	router routers.Router
	err    error
}

func openAPIRouter(t testing.TB) routers.Router {
	t.Helper()
	spec.once.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(openAPI)
		if err == nil {
			err = doc.Validate(context.Background())
		}
		if err == nil {
			spec.router, err = legacy.NewRouter(doc)
		}
		spec.err = err
	})
	if spec.err != nil {
		t.Fatalf("openapi.json: %v", spec.err)
	}
	return spec.router
}

// conformsToOpenAPI fails the test unless the answer to req is one that
// openapi.json describes: every answer the tests get goes through it.
func conformsToOpenAPI(t testing.TB, req *http.Request, code int, header http.Header, body []byte) {
	t.Helper()
	route, params, err := openAPIRouter(t).FindRoute(req)
	if err != nil {
		if code != http.StatusNotFound && code != http.StatusBadRequest && code != http.StatusUnauthorized && code != http.StatusTooManyRequests {
			t.Errorf("%s %s: %d for a path openapi.json does not describe: %v", req.Method, req.URL, code, err)
		}
		return // an unknown path: its answer is an error like any other (errorOf checks it)
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status:  code,
		Header:  header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		t.Errorf("%s %s: the %d answer does not conform to openapi.json: %v\n%s", req.Method, req.URL, code, err, body)
	}
}

func TestOpenAPIIsServed(t *testing.T) {
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}}, Options{})
	a := get(t, base+"/v1/openapi.json", "")
	if a.code != 200 || a.body != string(openAPI) {
		t.Errorf("%d, %d bytes", a.code, len(a.body))
	}
	openAPIRouter(t)
}
