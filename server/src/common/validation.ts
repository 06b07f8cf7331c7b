/** class-validator decorators the built-in ones lack, and the class-transformer one they need. */
import { Transform } from 'class-transformer';
import { registerDecorator, type ValidationArguments } from 'class-validator';
import { labelsProblem } from '#shared/labels/index.js';

/**
 * A map of names to text (`{"web": "1.0.0"}`) with at most `maxKeys` entries and values of at most `maxValueLength`
 * characters; the message names the property and, for a bad value, its key.
 */
export function IsStringRecord(o: { maxKeys: number; maxValueLength: number }) {
  const problem = (value: unknown, property: string): string | null => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return null; // IsObject's to say
    const entries = Object.entries(value);
    if (entries.length > o.maxKeys) return `${property} has ${entries.length} entries (at most ${o.maxKeys})`;
    for (const [k, v] of entries) {
      if (typeof v !== 'string' || !v) return `${property}.${k} must be a version string`;
      if (v.length > o.maxValueLength) return `${property}.${k} must be at most ${o.maxValueLength} characters`;
    }
    return null;
  };
  return (target: object, propertyName: string) =>
    registerDecorator({
      name: 'isStringRecord',
      target: target.constructor,
      propertyName,
      validator: {
        validate: (value: unknown, args: ValidationArguments) => problem(value, args.property) === null,
        defaultMessage: (args: ValidationArguments) =>
          problem(args.value, args.property) ?? `${args.property} is not valid`,
      },
    });
}

/**
 * A machine's labels (`{"zone": "a"}`), judged by the shared rules (shared/src/labels): the message names the
 * property and, for a bad label, the label. Pair it with RawObject, so that it judges what the client sent.
 */
export function IsLabels() {
  return (target: object, propertyName: string) =>
    registerDecorator({
      name: 'isLabels',
      target: target.constructor,
      propertyName,
      validator: {
        validate: (value: unknown, args: ValidationArguments) => labelsProblem(value, args.property) === null,
        defaultMessage: (args: ValidationArguments) =>
          labelsProblem(args.value, args.property) ?? `${args.property} is not valid`,
      },
    });
}

/**
 * The property as it arrived in the JSON body. class-transformer copies a nested plain object key by key and skips
 * keys that name Object.prototype's methods (`toString`, `valueOf`): a label of that name would vanish without a
 * word. Taking the original value lets the validator see, and refuse or keep, exactly what was sent.
 */
export const RawObject = () => Transform(({ obj, key }) => (obj as Record<string, unknown>)[key]);
