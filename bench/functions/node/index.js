// The Node.js twin of bench/echo: returns the event unchanged.
exports.handler = async (event) => event;
