// A handler module whose require fails.
require('nubo-no-such-module');

exports.handler = async () => 'unreachable';
