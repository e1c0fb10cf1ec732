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
