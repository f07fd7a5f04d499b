"""``hack/kube-test-server``: build, start and stop a real kube-apiserver and etcd for tests."""
