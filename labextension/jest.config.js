/** Jest runs the pure modules' specs in Node; nothing here needs a browser. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testRegex: 'src/__tests__/.*\\.spec\\.ts$',
  transform: {
    '^.+\\.ts$': [
      'ts-jest',
      {
        tsconfig: {
          module: 'commonjs',
          composite: false,
          incremental: false,
          declaration: false,
          types: ['jest']
        }
      }
    ]
  }
};
