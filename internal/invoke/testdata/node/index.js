// Node.js handlers of the invoke end-to-end tests (one per function).
let count = 0;

exports.asyncHandler = async (event, context) => {
  count++;
  console.log('node async', context.awsRequestId);
  return { event, count };
};

exports.callbackHandler = (event, context, callback) => {
  setTimeout(() => callback(null, { callback: event, id: context.awsRequestId }), 10);
};

exports.fail = async (event) => {
  throw new TypeError('bad type: ' + event.msg);
};

exports.sleep = async () => new Promise((resolve) => setTimeout(() => resolve('woke up'), 3000));

exports.ctx = async (event, context) => ({
  functionName: context.functionName,
  functionVersion: context.functionVersion,
  awsRequestId: context.awsRequestId,
  invokedFunctionArn: context.invokedFunctionArn,
  memoryLimitInMB: context.memoryLimitInMB,
  remaining: context.getRemainingTimeInMillis(),
  executionEnv: process.env.AWS_EXECUTION_ENV,
  handler: process.env._HANDLER,
});

// Response streaming: three parts 400 ms apart, as text/plain; with
// event.fail, a rejection after them.
exports.stream = awslambda.streamifyResponse(async (event, responseStream, context) => {
  responseStream.setContentType('text/plain');
  for (let i = 0; i < 3; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 400));
    responseStream.write(`part-${i} ${context.awsRequestId}\n`);
  }
  if (event.fail) throw new RangeError('broke mid-stream');
  responseStream.end();
});

// A function URL style answer: the HTTP prelude, then the body.
exports.http = awslambda.streamifyResponse(async (event, responseStream) => {
  const out = awslambda.HttpResponseStream.from(responseStream, { statusCode: 201, headers: { 'x-nubo': 'yes' } });
  out.write('created');
  out.end();
});
