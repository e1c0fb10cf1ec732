package main
import (
 _ "github.com/nats-io/nats-server/v2/server"
 _ "github.com/nats-io/nats.go"
 _ "github.com/nats-io/nats.go/jetstream"
 _ "github.com/aws/aws-sdk-go-v2/service/lambda"
 _ "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
 _ "github.com/aws/aws-sdk-go-v2/credentials"
 _ "github.com/aws/aws-lambda-go/lambda"
 _ "github.com/google/uuid"
 _ "golang.org/x/sys/unix"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/google/nftables"
 _ "github.com/vishvananda/netlink"
 _ "github.com/vishvananda/netns"
)
func main(){}
