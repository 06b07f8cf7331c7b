import { ApiProperty, ApiPropertyOptional, type ApiPropertyOptions } from '@nestjs/swagger';
import { IsDefined, IsNotEmpty, IsOptional, IsString, MaxLength } from 'class-validator';

const PHASES_SCHEMA: ApiPropertyOptions = {
  type: 'array',
  items: {
    type: 'object',
    required: ['name', 'environmentIds'],
    properties: {
      name: { type: 'string' },
      environmentIds: { type: 'array', items: { type: 'string' }, description: 'ids or names' },
      minimumEnvironmentsBeforePromotion: { type: 'integer', minimum: 0, description: '0 (the default) = all' },
      optional: { type: 'boolean', default: false },
    },
  },
};

export class CreateLifecycleDto {
  @ApiProperty({ type: String, maxLength: 100 })
  @IsString()
  @IsNotEmpty()
  @MaxLength(100)
  name: string;
  /** Judged by the lifecycles service, which names the offending field (phases[1].environmentIds ...). */
  @ApiProperty(PHASES_SCHEMA)
  @IsDefined({ message: 'phases must be a non-empty list of phases' })
  phases: unknown;
}

/** What PATCH changes; a field left out keeps its value, and phases are replaced whole. */
export class UpdateLifecycleDto {
  @ApiPropertyOptional({ type: String, maxLength: 100 })
  @IsOptional()
  @IsString()
  @IsNotEmpty()
  @MaxLength(100)
  name?: string;
  @ApiPropertyOptional(PHASES_SCHEMA)
  @IsOptional()
  phases?: unknown;
}
